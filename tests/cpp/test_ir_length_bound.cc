// The mask's bound kv_idx < lengths[b] found, and taken out for the per-batch key lengths
// layout (ir/length_bound.h); the planner's and codegen's side of that layout.
#include <gtest/gtest.h>

#include "codegen/instantiate.h"
#include "ir/length_bound.h"
#include "ir/variant.h"
#include "plan/planner.h"
#include "plan_fixtures.h"
#include "trace_builder.h"

namespace ae {
namespace {

using test::TraceBuilder;

// causal on positions q_idx + start[b] (when `causal`), and-ed with kv_idx < lengths[b] as the
// positions rewrite writes it; lengths of `dtype`, indexed by `index` ("b", or "h").
std::string positions_trace(bool causal, const std::string& dtype = "int64",
                            const std::string& index = "b", bool bound_first = false) {
  TraceBuilder t;
  int start = t.buffer("q_start", "int64", {1});
  int lengths = t.buffer("kv_len", dtype, {1});
  int s = t.param("score"), b = t.param("b"), h = t.param("h"), q = t.param("q_idx"),
      kv = t.param("kv_idx");
  t.score(s);
  int bound = t.op("lt", {kv, t.load(lengths, {index == "b" ? b : h})});
  if (!causal) {
    t.mask(bound);
  } else {
    int pos = t.op("add", {q, t.load(start, {b})});
    int c = t.op("ge", {pos, kv});
    t.mask(bound_first ? t.op("and", {bound, c}) : t.op("and", {c, bound}));
  }
  return t.str();
}

TEST(KvLengthBound, FoundAloneOrInAnAndTree) {
  for (bool first : {false, true}) {
    const auto v = ir::build_variant(positions_trace(true, "int64", "b", first));
    ASSERT_EQ(v->kv_lengths_buffer, 1);
    ASSERT_TRUE(v->without_kv_lengths);
    // What is left is the causal mask alone: it still reads q_start, not kv_len.
    const ir::Analysis& a = v->without_kv_lengths->analysis;
    EXPECT_TRUE(a.has_mask);
    const std::string text = v->without_kv_lengths->forward.text(false);
    EXPECT_NE(text.find("$0["), std::string::npos) << text;
    EXPECT_EQ(text.find("$1["), std::string::npos) << text;
    EXPECT_EQ(v->without_kv_lengths->kv_lengths_buffer, -1);
    EXPECT_NE(v->without_kv_lengths->key, v->key);
  }
  // The bound alone: no mask left (plain decode against a cache needs no block states).
  const auto plain = ir::build_variant(positions_trace(false));
  ASSERT_EQ(plain->kv_lengths_buffer, 1);
  EXPECT_FALSE(plain->without_kv_lengths->analysis.has_mask);
  // int32 lengths too.
  EXPECT_EQ(ir::build_variant(positions_trace(false, "int32"))->kv_lengths_buffer, 1);
}

TEST(KvLengthBound, OnlyThatShape) {
  // Float lengths, lengths by head: not a per-batch key count.
  EXPECT_EQ(ir::build_variant(positions_trace(false, "float32"))->kv_lengths_buffer, -1);
  EXPECT_EQ(ir::build_variant(positions_trace(false, "int64", "h"))->kv_lengths_buffer, -1);
  // kv_idx <= lengths[b], an or, and a 2-D table are not it either.
  for (const std::string op : {"le", "or"}) {
    TraceBuilder t;
    int lengths = t.buffer("kv_len", "int64", {1});
    int s = t.param("score"), b = t.param("b"), kv = t.param("kv_idx"), q = t.param("q_idx");
    t.score(s);
    int load = t.load(lengths, {b});
    t.mask(op == "le" ? t.op("le", {kv, load})
                      : t.op("or", {t.op("lt", {kv, load}), t.op("ge", {q, kv})}));
    EXPECT_EQ(ir::build_variant(t.str())->kv_lengths_buffer, -1) << op;
  }
  TraceBuilder t2;
  int table = t2.buffer("kv_len", "int64", {2, 2});
  int s = t2.param("score"), b = t2.param("b"), kv = t2.param("kv_idx");
  t2.score(s);
  t2.mask(t2.op("lt", {kv, t2.load(table, {b, b})}));
  EXPECT_EQ(ir::build_variant(t2.str())->kv_lengths_buffer, -1);
}

TEST(KvLengthBound, ASharedComparisonStays) {
  // The score_mod reads the same comparison (where(kv < len[b], s, s * 2)): taking the bound
  // out of the mask would change the score too, so it is not taken.
  TraceBuilder t;
  int lengths = t.buffer("kv_len", "int64", {1});
  int s = t.param("score"), b = t.param("b"), kv = t.param("kv_idx");
  int bound = t.op("lt", {kv, t.load(lengths, {b})});
  t.score(t.op("where", {bound, s, t.op("mul", {s, t.fconst(2.0)})}));
  t.mask(bound);
  EXPECT_EQ(ir::build_variant(t.str())->kv_lengths_buffer, -1);
}

TEST(KvLengthBound, PlannedForForwardsOnly) {
  using namespace plan;
  PlanRequest r = testing::request(OpKind::Forward, devices::h200(), testing::plain(), 128, 128, 1);
  r.problem.kv_len = 32768;
  r.problem.kv_layout = KvLayout::KvLengths;
  LaunchPlan p = make_plan(r);
  ASSERT_TRUE(p.ok) << p.reason;
  for (const Step& s : p.steps)  // the combine's rows are dense in every layout
    EXPECT_EQ(s.spec.layout, s.spec.kind == codegen::Kind::FwdCombine ? codegen::Layout::Dense
                                                                      : codegen::Layout::KvLengths);
  EXPECT_NE(p.steps[0].spec.describe().find(" kvlens"), std::string::npos)
      << p.steps[0].spec.describe();
  // No V-check pass on this layout (it reads dense rows).
  for (const Step& s : p.steps) EXPECT_NE(s.spec.kind, codegen::Kind::VCheck);
  r.problem.kind = OpKind::Backward;
  EXPECT_FALSE(make_plan(r).ok);
  PlanRequest amd = testing::request(OpKind::Forward, devices::mi250(), testing::plain());
  amd.problem.kv_layout = KvLayout::KvLengths;
  p = make_plan(amd);
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_EQ(testing::main_step(p).spec.layout, codegen::Layout::KvLengths);
  amd.problem.kind = OpKind::Backward;
  p = make_plan(amd);
  EXPECT_FALSE(p.ok);
  EXPECT_NE(p.reason.find("forwards only"), std::string::npos) << p.reason;
}

TEST(KvLengthBound, InstantiatedWithTheLayout) {
  const auto v = ir::build_variant(positions_trace(false));
  codegen::KernelSpec s;
  s.kind = codegen::Kind::Forward;
  s.family = codegen::Family::Sm90;
  s.layout = codegen::Layout::KvLengths;
  s.arch = "sm_90a";
  s.d_qk = s.d_v = 128;
  s.block_m = 128;
  s.block_n = 128;
  s.warps = 12;
  s.buffer_dtypes = {"int64", "int64"};
  const std::string src = codegen::instantiate(v->without_kv_lengths.get(), s);
  EXPECT_NE(src.find("ae::KvLengthsLayout"), std::string::npos) << src;
}

}  // namespace
}  // namespace ae
