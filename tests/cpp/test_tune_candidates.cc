// The autotuner's search space and choice (csrc/tune/candidates.h, compile_filter.h,
// tuner.h) without a GPU: which candidates each family and kind gets on the device classes,
// that they all plan and differ, the compiler-report filter, and the choice among timings
// (a fake timer).
#include <gtest/gtest.h>

#include <cstdlib>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "tune/candidates.h"
#include "tune/tuner.h"

namespace ae::tune {
namespace {

plan::PlanRequest request(plan::OpKind kind, plan::DeviceCaps dev, int d = 128, int64_t s = 4096,
                          int64_t batch = 2, int64_t heads = 16) {
  plan::PlanRequest r;
  r.variant.key = "plain";
  r.problem.kind = kind;
  r.problem.batch = batch;
  r.problem.q_heads = heads;
  r.problem.kv_heads = heads;
  r.problem.q_len = r.problem.kv_len = s;
  r.problem.d_qk = r.problem.d_v = d;
  r.problem.scale = 0.1;
  r.device = dev;
  return r;
}

const plan::Step& main_of(const Candidate& c) {
  EXPECT_NE(c.main_step(), nullptr);
  return *c.main_step();
}

class TuneCandidates : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* v : {"AE_SM90_FWD", "AE_SM80_FWD", "AE_SM80_BWD", "AE_KV_SPLITS", "AE_PERSISTENT",
                          "AE_DISABLE_SM90", "AE_DISABLE_SM90_BWD", "AE_DECODE"})
      unsetenv(v);
  }
};

TEST_F(TuneCandidates, HopperForwardWidthsAndSchedules) {
  const auto cands = candidates(request(plan::OpKind::Forward, plan::devices::h200()));
  ASSERT_GT(cands.size(), 10u);
  EXPECT_TRUE(cands[0].choice.vars.empty());  // the table's first
  EXPECT_EQ(main_of(cands[0]).spec.block_n, 128);
  EXPECT_EQ(main_of(cands[0]).spec.stages, 3);
  std::set<std::string> plans;
  std::set<int> widths;
  bool no_overlap = false, persistent = false, three = false, ahead = false, not_ahead = false;
  for (const Candidate& c : cands) {
    EXPECT_TRUE(c.plan.ok);
    EXPECT_TRUE(plans.insert(c.plan.describe()).second) << "duplicate " << c.choice.text();
    const codegen::KernelSpec& s = main_of(c).spec;
    EXPECT_EQ(s.family, codegen::Family::Sm90);
    widths.insert(s.block_n);
    no_overlap |= !s.overlap && !s.pingpong;
    persistent |= s.persistent;
    three |= s.stages == 3;
    ahead |= s.overlap && s.softmax_ahead;
    not_ahead |= s.overlap && !s.softmax_ahead && s.block_n == 128 && s.stages == 3;
    EXPECT_LE(main_of(c).smem, plan::devices::h200().smem_per_block);
  }
  EXPECT_TRUE(no_overlap && persistent && three);
  EXPECT_TRUE(ahead && not_ahead);  // the softmax ahead of P V's wait, both ways
  // 192 keys pass the register estimate at D64 only (192 * 3 / 4 + 64 + 40 > 240).
  EXPECT_EQ(widths, (std::set<int>{64, 80, 96, 112, 128, 144, 160, 176}));
}

TEST_F(TuneCandidates, RegisterEstimateBoundsTheWidthsAtD256) {
  for (const Candidate& c : candidates(request(plan::OpKind::Forward, plan::devices::h100(), 256)))
    EXPECT_LE(main_of(c).spec.block_n, 96) << c.choice.text();  // 96 * 3 / 4 + 128 + 40 <= 240
}

TEST_F(TuneCandidates, AmpereForwardAndBackward) {
  const auto fwd = candidates(request(plan::OpKind::Forward, plan::devices::a100()));
  ASSERT_GT(fwd.size(), 4u);
  std::set<std::string> configs;
  for (const Candidate& c : fwd) {
    EXPECT_EQ(main_of(c).spec.family, codegen::Family::Sm80);
    configs.insert(main_of(c).spec.describe());
  }
  EXPECT_EQ(configs.size(), fwd.size());
  const auto bwd = candidates(request(plan::OpKind::Backward, plan::devices::a100()));
  ASSERT_GE(bwd.size(), 2u);
  for (const Candidate& c : bwd) EXPECT_EQ(main_of(c).spec.kind, codegen::Kind::Backward);
}

TEST_F(TuneCandidates, HopperHeadDimsWithoutAnSm90ForwardTuneTheSm80One) {
  const auto fwd = candidates(request(plan::OpKind::Forward, plan::devices::h100(), 48));
  ASSERT_GT(fwd.size(), 4u);
  for (const Candidate& c : fwd) EXPECT_EQ(main_of(c).spec.family, codegen::Family::Sm80);
}

TEST_F(TuneCandidates, HopperBackwardAlsoTriesTheSm80Backward) {
  const auto bwd = candidates(request(plan::OpKind::Backward, plan::devices::h100()));
  ASSERT_GE(bwd.size(), 3u);
  EXPECT_EQ(main_of(bwd[0]).spec.family, codegen::Family::Sm90);
  int sm80 = 0;
  for (const Candidate& c : bwd) sm80 += main_of(c).spec.family == codegen::Family::Sm80;
  EXPECT_GE(sm80, 2);
}

TEST_F(TuneCandidates, SplitCountsWhereTheTilesLeaveSmsIdle) {
  // Decode-like: 1 x 8 heads x 128 queries is 8 tiles for 132 SMs.
  const auto few = candidates(request(plan::OpKind::Forward, plan::devices::h100(), 128, 128, 1, 8));
  std::set<int> splits;
  for (const Candidate& c : few) splits.insert(c.plan.attn.kv_splits);
  EXPECT_EQ(splits, std::set<int>{1});  // 128 keys: one block, nothing to split
  const auto decode = [] {
    plan::PlanRequest r = request(plan::OpKind::Forward, plan::devices::h100(), 128, 1, 1, 8);
    r.problem.kv_len = 32768;
    return candidates(r);
  }();
  splits.clear();
  for (const Candidate& c : decode) splits.insert(c.plan.attn.kv_splits);
  EXPECT_GE(splits.size(), 4u);
  EXPECT_TRUE(splits.count(1) && splits.count(32));
  // A full wave of tiles: no split candidates.
  for (const Candidate& c : candidates(request(plan::OpKind::Forward, plan::devices::h100())))
    EXPECT_EQ(c.plan.attn.kv_splits, 1);
}

TEST_F(TuneCandidates, DecodeTilesWhereDecodeIsOptedIn) {
  plan::PlanRequest r = request(plan::OpKind::Forward, plan::devices::h100(), 128, 1, 1, 8);
  r.problem.kv_len = 8192;
  auto decode_tiles = [&] {
    std::set<std::string> tiles;
    for (const Candidate& c : candidates(r))
      if (main_of(c).spec.decode) tiles.insert(fmt::format("{}x{}", main_of(c).spec.block_n, main_of(c).spec.warps));
    return tiles;
  };
  EXPECT_TRUE(decode_tiles().empty());
  setenv("AE_DECODE", "1", 1);
  EXPECT_GE(decode_tiles().size(), 4u);  // 64x2, 64x4, 128x2, ..., 256x8
  unsetenv("AE_DECODE");
}

TEST_F(TuneCandidates, AnExplicitOverrideWins) {
  setenv("AE_SM90_FWD", "64,2,1,1", 1);
  for (const Candidate& c : candidates(request(plan::OpKind::Forward, plan::devices::h100())))
    EXPECT_EQ(main_of(c).spec.block_n, 64) << c.choice.text();
  unsetenv("AE_SM90_FWD");
}

TEST_F(TuneCandidates, NothingToTuneWhereTheTableRefuses) {
  plan::PlanRequest r = request(plan::OpKind::Forward, plan::devices::h100());
  r.problem.dtype = plan::ElemType::Float32;
  EXPECT_TRUE(candidates(r).empty());
}

TEST(TuneFilter, CompilerReportDecides) {
  plan::Step step;
  step.threads = 384;
  step.smem = 200 * 1024;
  jit::KernelFigures f;
  f.registers = 168;
  f.smem_bytes = 0;
  f.spill_stores = f.spill_loads = 0;
  const plan::DeviceCaps h100 = plan::devices::h100();
  EXPECT_EQ(unfit(f, step, h100), "");
  f.spill_stores = 24;
  EXPECT_NE(unfit(f, step, h100).find("spills"), std::string::npos);
  f.spill_stores = 0;
  f.smem_bytes = 40 * 1024;  // static on top of the dynamic
  EXPECT_NE(unfit(f, step, h100).find("shared memory"), std::string::npos);
  f.smem_bytes = 0;
  f.registers = 200;  // 200 x 384 > 64K
  EXPECT_NE(unfit(f, step, h100).find("registers"), std::string::npos);
}

TEST(TuneFilter, ProgressFromTheCallingThreadOnly) {
  // Empty plans: nothing to compile, each judged at once by a worker.
  std::vector<Candidate> cands(20);
  const ir::Variant variant;
  const std::thread::id caller = std::this_thread::get_id();
  size_t last = 0;
  const auto reports = compile_all(cands, variant, plan::devices::h100(), 4, Clock::time_point::max(),
                                   [&](size_t n) {
                                     EXPECT_EQ(std::this_thread::get_id(), caller);
                                     EXPECT_GT(n, last);
                                     last = n;
                                   });
  EXPECT_EQ(last, cands.size());
  for (const CompileReport& r : reports) EXPECT_FALSE(r.compiled || r.eligible);
}

std::vector<Candidate> fake(size_t n) {
  std::vector<Candidate> c(n);
  for (size_t i = 1; i < n; ++i) c[i].choice.vars["AE_KV_SPLITS"] = std::to_string(i);
  return c;
}

double ms_of(const Candidate& c, const std::vector<double>& ms) {
  auto it = c.choice.vars.find("AE_KV_SPLITS");
  return ms.at(it == c.choice.vars.end() ? 0 : std::stoi(it->second));
}

TEST(TuneChoose, FastestEligibleWinsByMoreThanTheNoise) {
  const auto cands = fake(4);
  const auto far = Clock::now() + std::chrono::hours(1);
  std::vector<double> ms = {1.0, 0.7, 0.5, 0.8};
  TuneResult r = choose(cands, {true, true, false, true},
                        [&](const Candidate& c) { return ms_of(c, ms); }, far, {});
  EXPECT_EQ(r.chosen, 1u);  // 2 is faster but not eligible (spilled)
  EXPECT_LT(r.ms[2], 0);
  EXPECT_EQ(r.timed, 3u);
  ms = {1.0, 0.99, 1.2, 1.01};  // within the margin: the table's
  r = choose(cands, {true, true, true, true}, [&](const Candidate& c) { return ms_of(c, ms); }, far, {});
  EXPECT_EQ(r.chosen, 0u);
}

TEST(TuneChoose, TimerFailuresAndTheDeadline) {
  const auto cands = fake(3);
  auto timer = [](const Candidate& c) -> double {
    if (c.choice.vars.count("AE_KV_SPLITS") && c.choice.vars.at("AE_KV_SPLITS") == "1")
      throw std::runtime_error("too many resources requested for launch");
    return c.choice.vars.empty() ? 2.0 : 1.0;
  };
  TuneResult r = choose(cands, {true, true, true}, timer, Clock::now() + std::chrono::hours(1), {});
  EXPECT_EQ(r.chosen, 2u);
  EXPECT_LT(r.ms[1], 0);
  // Past the deadline only the table's choice is timed.
  r = choose(cands, {true, true, true}, timer, Clock::now() - std::chrono::seconds(1), {});
  EXPECT_EQ(r.timed, 1u);
  EXPECT_EQ(r.chosen, 0u);
}

TEST(TuneChoose, ReportsProgress) {
  const auto cands = fake(3);
  std::vector<size_t> seen;
  TuneOptions o;
  o.progress = [&](const Progress& p) {
    EXPECT_EQ(p.stage, "time");
    EXPECT_EQ(p.total, 2u);
    seen.push_back(p.done);
  };
  choose(cands, {true, false, true}, [](const Candidate&) { return 1.0; },
         Clock::now() + std::chrono::hours(1), o);
  EXPECT_EQ(seen, (std::vector<size_t>{1, 2}));
}

}  // namespace
}  // namespace ae::tune
