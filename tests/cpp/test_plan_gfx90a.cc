// The planner on AMD devices (MI250, gfx90a) without a GPU: the gfx90a forward and backward,
// the portable kernels of templates/common around them, their tiles within CDNA2's LDS and at
// two waves per SIMD, what they refuse, and AMD targets they are not built for. Also the reading
// of a HIP device's target (runner/device_caps_hip.h).
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "gfx90a/shapes.h"
#include "plan/planner.h"
#include "plan/tile_tables.h"
#include "runner/device_caps_hip.h"
#include "plan_fixtures.h"

namespace ae::plan {
namespace {

using codegen::Family;
using codegen::Kind;

using testing::main_step;

PlanRequest request(OpKind kind, bool masked, int d_qk = 128, int d_v = 128, int64_t s = 4096) {
  return testing::request(kind, devices::mi250(), masked ? testing::causal() : testing::plain(),
                          d_qk, d_v, s);
}

TEST(PlannerGfx90a, Mi250ForwardIsTheGfx90aTemplate) {
  const LaunchPlan p = make_plan(request(OpKind::Forward, false));
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_EQ(p.family, "gfx90a");
  ASSERT_EQ(p.steps.size(), 1u);
  const Step& s = p.steps[0];
  EXPECT_EQ(s.spec.family, Family::Gfx90a);
  EXPECT_EQ(s.spec.arch, "gfx90a");
  EXPECT_EQ(s.threads, 64 * s.spec.warps);  // waves of 64 lanes
  EXPECT_EQ(s.spec.describe(), "fwd gfx90a bf16 d128/128 128x32 w4");
  EXPECT_EQ(s.grid.x, 4096u / 128);
  EXPECT_EQ(s.grid.y, 16u);
  EXPECT_EQ(s.grid.z, 2u);
  EXPECT_EQ(s.smem, gfx90a::fwd_lds_bytes(32, 128, 128));
  EXPECT_TRUE(s.spec.compile_options().empty());
  EXPECT_TRUE(s.spec.fallback_options().empty());  // ptxas levels are NVIDIA's
}

// Every head dim the table takes: a tile whose LDS leaves two waves per SIMD (blocks per CU
// by LDS, times the block's waves per SIMD), rows per wave 16 or 32.
TEST(PlannerGfx90a, TilesLeaveTwoWavesPerSimd) {
  for (int64_t len : {4096, 16})  // prefill and decode-sized (the few-rows tile)
    for (int d_qk = 16; d_qk <= 256; d_qk += 16)
      for (int d_v : {16, 32, 64, 96, 128, 192, 256})
        for (bool bf16 : {true, false}) {
          PlanRequest r = request(OpKind::Forward, true, d_qk, d_v, len);
          r.problem.dtype = bf16 ? ElemType::BFloat16 : ElemType::Float16;
          const LaunchPlan p = make_plan(r);
          ASSERT_TRUE(p.ok) << d_qk << "/" << d_v << ": " << p.reason;
          const Step& s = main_step(p);
          const int rows = s.spec.block_m / s.spec.warps;
          EXPECT_TRUE(rows == 16 || rows == 32) << s.spec.describe();
          EXPECT_EQ(d_v % rows, 0) << s.spec.describe();
          const int blocks = gfx90a::kLdsPerCu / s.smem;
          EXPECT_GE(blocks * s.spec.warps / gfx90a::kSimdsPerCu, 2) << s.spec.describe();
          EXPECT_EQ(s.spec.bf16, bf16);
          if (r.problem.q_len <= 64) EXPECT_EQ(rows, 16) << s.spec.describe();
        }
}

TEST(PlannerGfx90a, MaskedAndSplitForwardsUseTheCommonKernels) {
  const LaunchPlan masked = make_plan(request(OpKind::Forward, true));
  ASSERT_TRUE(masked.ok) << masked.reason;
  ASSERT_EQ(masked.steps.size(), 2u);
  EXPECT_EQ(masked.steps[0].spec.kind, Kind::BlockState);
  EXPECT_EQ(masked.steps[0].spec.family, Family::Common);
  EXPECT_EQ(masked.steps[0].spec.arch, "gfx90a");
  EXPECT_EQ(masked.steps[0].threads, 128);
  EXPECT_EQ(masked.block_states.block_m, main_step(masked).spec.block_m);

  // Decode-sized: few query tiles for 110 CUs, so the keys are split and merged by the combine.
  PlanRequest r = request(OpKind::Forward, false, 128, 128, 65536);
  r.problem.q_len = 1;
  const LaunchPlan split = make_plan(r);
  ASSERT_TRUE(split.ok) << split.reason;
  EXPECT_TRUE(main_step(split).spec.kv_split);
  EXPECT_EQ(main_step(split).spec.describe(), "fwd gfx90a bf16 d128/128 64x32 w4 split");
  EXPECT_FALSE(main_step(split).spec.decode);  // the sm80 decode template is NVIDIA's
  EXPECT_EQ(split.steps.back().spec.kind, Kind::FwdCombine);
  EXPECT_EQ(split.steps.back().spec.arch, "gfx90a");
  // A wave (64 lanes) per query row: 2 rows per 128-thread block.
  EXPECT_EQ(split.steps.back().grid.x, 2u * 16 / 2);
}

// The backward: the prep row pass, the gfx90a main kernel (a block per 128 keys of a KV head),
// the dQ row pass, all for gfx90a; dq_accum padded to whole 32-query blocks.
TEST(PlannerGfx90a, Mi250BackwardIsTheGfx90aTemplate) {
  const LaunchPlan p = make_plan(request(OpKind::Backward, false));
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_EQ(p.family, "gfx90a");
  ASSERT_EQ(p.steps.size(), 3u);
  EXPECT_EQ(p.steps[0].spec.kind, Kind::BwdPrep);
  EXPECT_EQ(p.steps[2].spec.kind, Kind::BwdDq);
  for (const Step& s : p.steps) EXPECT_EQ(s.spec.arch, "gfx90a") << s.spec.describe();
  const Step& s = p.steps[1];
  EXPECT_EQ(s.spec.family, Family::Gfx90a);
  EXPECT_EQ(s.spec.describe(), "bwd gfx90a bf16 d128/128 32x128 w8");
  EXPECT_EQ(s.threads, 512);
  EXPECT_EQ(s.grid.x, 4096u / 128);
  EXPECT_EQ(s.grid.y, 4u);  // KV heads
  EXPECT_EQ(s.grid.z, 2u);
  EXPECT_EQ(s.smem, gfx90a::bwd_lds_bytes(32, 128, 128, 128));
  EXPECT_EQ(p.attn.n_q_blocks, 4096 / 32);
  const Workspace* acc = p.workspace(WorkspaceId::DqAccum);
  ASSERT_NE(acc, nullptr);
  EXPECT_EQ(acc->shape, (std::vector<int64_t>{2, 16, 4096, 128}));
  EXPECT_EQ(p.rows.acc_rows, 4096);
  EXPECT_EQ(p.rows.acc_tiled, 0);

  // A tail: dq_accum's rows padded to whole blocks; a mask: the block-state step first, with
  // the backward's tiles.
  const LaunchPlan masked = make_plan(request(OpKind::Backward, true, 64, 64, 1000));
  ASSERT_TRUE(masked.ok) << masked.reason;
  EXPECT_EQ(masked.steps[0].spec.kind, Kind::BlockState);
  EXPECT_EQ(masked.block_states.block_m, 32);
  EXPECT_EQ(masked.block_states.block_n, 128);
  EXPECT_EQ(masked.workspace(WorkspaceId::DqAccum)->shape[2], 1024);
  EXPECT_EQ(main_step(masked).grid.x, 8u);
}

// Every head dim pair the backward takes (multiples of 16 up to 256): LDS for one 8-wave block
// per CU at least (2 waves per SIMD); 16 keys per wave up to 128, past it per pair of waves
// with their exchange in LDS, 32 queries per block where it fits, else 16.
TEST(PlannerGfx90a, BackwardTilesLeaveTwoWavesPerSimd) {
  for (int d_qk = 16; d_qk <= 256; d_qk += 16)
    for (int d_v = 16; d_v <= 256; d_v += 16)
      for (bool bf16 : {true, false}) {
        PlanRequest r = request(OpKind::Backward, true, d_qk, d_v);
        r.problem.dtype = bf16 ? ElemType::BFloat16 : ElemType::Float16;
        const LaunchPlan p = make_plan(r);
        ASSERT_TRUE(p.ok) << d_qk << "/" << d_v << ": " << p.reason;
        const Step& s = main_step(p);
        const bool paired = d_qk > 128 || d_v > 128;
        EXPECT_EQ(s.spec.warps, 8) << s.spec.describe();
        EXPECT_EQ(s.spec.block_n, gfx90a::kBwdKeysPerWave * s.spec.warps / (paired ? 2 : 1))
            << s.spec.describe();
        EXPECT_EQ(s.smem, gfx90a::bwd_lds_bytes(s.spec.block_m, s.spec.block_n, d_qk, d_v));
        const int blocks = gfx90a::kLdsPerCu / s.smem;
        EXPECT_GE(blocks * s.spec.warps / gfx90a::kSimdsPerCu, 2) << s.spec.describe();
        // 32 query rows unless they would not fit
        const bool rows32 =
            gfx90a::bwd_lds_bytes(32, s.spec.block_n, d_qk, d_v) <= gfx90a::kLdsPerCu;
        EXPECT_EQ(s.spec.block_m, rows32 ? 32 : 16) << s.spec.describe();
        EXPECT_EQ(s.spec.bf16, bf16);
      }
  const int refused[][2] = {{272, 128}, {128, 272}, {136, 136}, {8, 8}};
  for (const auto& d : refused) {
    const LaunchPlan p = make_plan(request(OpKind::Backward, false, d[0], d[1]));
    ASSERT_FALSE(p.ok) << d[0] << "/" << d[1];
    EXPECT_NE(p.reason.find("have no gfx90a backward"), std::string::npos) << p.reason;
  }
}

// Past head dim 128: 64 keys per block (pairs of waves); 32 query rows up to 384 head-dim
// columns in all, 16 past it; dq_accum and the deterministic mode's counters per those rows; a
// captured tensor's LDS copy where a tile leaves room for it (at 192/192, 32 rows take all 64 KB:
// 16 rows with the copy).
TEST(PlannerGfx90a, BackwardPastHeadDim128) {
  const struct {
    int d_qk, d_v;
    const char* describe;
  } cases[] = {{192, 128, "bwd gfx90a bf16 d192/128 32x64 w8"},
               {160, 160, "bwd gfx90a bf16 d160/160 32x64 w8"},
               {128, 256, "bwd gfx90a bf16 d128/256 32x64 w8"},
               {256, 128, "bwd gfx90a bf16 d256/128 32x64 w8"},
               {208, 208, "bwd gfx90a bf16 d208/208 16x64 w8"},
               {256, 256, "bwd gfx90a bf16 d256/256 16x64 w8"}};
  for (const auto& c : cases) {
    const LaunchPlan p = make_plan(request(OpKind::Backward, false, c.d_qk, c.d_v, 1000));
    ASSERT_TRUE(p.ok) << p.reason;
    const Step& s = main_step(p);
    EXPECT_EQ(s.spec.describe(), c.describe);
    EXPECT_EQ(s.threads, 512);
    EXPECT_EQ(s.grid.x, (1000u + 63) / 64);
    EXPECT_EQ(s.smem, gfx90a::bwd_lds_bytes(s.spec.block_m, 64, c.d_qk, c.d_v));
    EXPECT_LE(s.smem, gfx90a::kLdsPerCu);
    EXPECT_EQ(p.attn.n_q_blocks, (1000 + s.spec.block_m - 1) / s.spec.block_m);
    EXPECT_EQ(p.workspace(WorkspaceId::DqAccum)->shape,
              (std::vector<int64_t>{2, 16, p.attn.n_q_blocks * s.spec.block_m, c.d_qk}));
  }
  EXPECT_EQ(gfx90a::bwd_lds_bytes(32, 64, 192, 192), gfx90a::kLdsPerCu);

  PlanRequest r = request(OpKind::Backward, true, 256, 256);
  r.problem.deterministic = true;
  LaunchPlan p = make_plan(r);
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_EQ(main_step(p).spec.describe(), "bwd gfx90a bf16 d256/256 16x64 w8 det");
  EXPECT_EQ(p.rows.order_rows, 16);
  EXPECT_EQ(p.workspace(WorkspaceId::DqOrder)->shape, (std::vector<int64_t>{2, 16, 4096 / 16}));
  EXPECT_EQ(p.block_states.block_m, 16);
  EXPECT_EQ(p.block_states.block_n, 64);

  r = request(OpKind::Backward, false, 192, 192);
  r.variant.score_loads = true;
  r.problem.captured.push_back({"float32", 2, true, 16 * 65});
  p = make_plan(r);
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_EQ(main_step(p).spec.describe(), "bwd gfx90a bf16 d192/192 16x64 w8 dbuf0 smem");
  EXPECT_EQ(main_step(p).smem, gfx90a::bwd_lds_bytes(16, 64, 192, 192) + 4 * 16 * 65);
}

// Captured tensors' gradients: an fp32 copy in LDS where it fits beside the tile, else global
// atomics. The deterministic mode: a dQ tile counter per 32-query block, zeroed by the prep pass.
TEST(PlannerGfx90a, BackwardGradientsAndDeterminism) {
  PlanRequest r = request(OpKind::Backward, false);
  r.variant.score_loads = true;
  r.problem.captured.push_back({"float32", 2, true, 16 * 65});
  LaunchPlan p = make_plan(r);
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_EQ(main_step(p).spec.grad_sink, codegen::GradSink::Shared);
  EXPECT_EQ(main_step(p).smem, gfx90a::bwd_lds_bytes(32, 128, 128, 128) + 4 * 16 * 65);
  EXPECT_EQ(main_step(p).spec.describe(), "bwd gfx90a bf16 d128/128 32x128 w8 dbuf0 smem");
  r.problem.captured[0].numel = 16 * 4096;  // 256 KB: global atomics
  p = make_plan(r);
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_EQ(main_step(p).spec.grad_sink, codegen::GradSink::Global);

  r = request(OpKind::Backward, true);
  r.problem.deterministic = true;
  p = make_plan(r);
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_EQ(main_step(p).spec.describe(), "bwd gfx90a bf16 d128/128 32x128 w8 det");
  const Workspace* order = p.workspace(WorkspaceId::DqOrder);
  ASSERT_NE(order, nullptr);
  EXPECT_EQ(order->shape, (std::vector<int64_t>{2, 16, 4096 / 32}));
  EXPECT_EQ(p.rows.order_rows, 32);
  EXPECT_EQ(p.steps[1].spec.kind, Kind::BwdPrep);  // (after the block states) zeroes them
}

TEST(PlannerGfx90a, KindsNotBuiltYetSayWhy) {
  PlanRequest r = request(OpKind::Forward, false, 136, 136);
  EXPECT_NE(make_plan(r).reason.find("no gfx90a kernel"), std::string::npos);
  // Asking for an NVIDIA family on an AMD device, or gfx90a on an NVIDIA one.
  r = request(OpKind::Forward, false);
  r.family = Family::Sm80;
  EXPECT_NE(make_plan(r).reason.find("no sm80 fwd kernel on AMD Instinct MI250X (gfx90a)"),
            std::string::npos);
  r.device = devices::h100();
  r.family = Family::Gfx90a;
  EXPECT_FALSE(make_plan(r).ok);
}

// Packed sequences (common/kv_layout.h VarlenLayout): the gfx90a forward (a split-KV launch's
// combine on the same rows) and backward (a masked one's table per sequence, per call); not the
// deterministic backward nor a custom normalization's, as on NVIDIA GPUs.
TEST(PlannerGfx90a, VarlenForwardAndBackwardOnTheLayout) {
  PlanRequest r = request(OpKind::Forward, false, 128, 128, 1024);
  r.problem.kv_layout = KvLayout::Varlen;
  LaunchPlan p = make_plan(r);
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_EQ(p.family, "gfx90a");
  EXPECT_EQ(main_step(p).spec.describe(), "fwd gfx90a bf16 d128/128 128x32 w4 varlen");
  r.problem.q_len = 1;  // decode: the few-rows tile, split, merged on the packed rows
  r.overrides.kv_splits = 4;
  p = make_plan(r);
  ASSERT_TRUE(p.ok) << p.reason;
  ASSERT_EQ(p.steps.size(), 2u);
  EXPECT_EQ(p.steps[0].spec.describe(), "fwd gfx90a bf16 d128/128 64x32 w4 split varlen");
  EXPECT_EQ(p.steps[1].spec.kind, Kind::FwdCombine);
  EXPECT_EQ(p.steps[1].spec.layout, codegen::Layout::Varlen);

  for (bool masked : {false, true}) {
    PlanRequest b = request(OpKind::Backward, masked, 64, 64, 1000);
    b.problem.kv_layout = KvLayout::Varlen;
    p = make_plan(b);
    ASSERT_TRUE(p.ok) << p.reason;
    EXPECT_EQ(main_step(p).spec.describe(), "bwd gfx90a bf16 d64/64 32x128 w8 varlen");
    if (masked) {
      EXPECT_TRUE(p.block_states.per_batch);
      EXPECT_EQ(p.steps[0].spec.kind, Kind::BlockState);
      EXPECT_EQ(p.steps[0].spec.layout, codegen::Layout::Varlen);
      EXPECT_TRUE(p.workspace(WorkspaceId::BlockStates)->cache_key.empty());  // per call
    }
    b.problem.deterministic = true;
    p = make_plan(b);
    EXPECT_FALSE(p.ok);
    EXPECT_NE(p.reason.find("not deterministic"), std::string::npos) << p.reason;
  }
  PlanRequest c = request(OpKind::Backward, false, 64, 64, 1000);
  c.problem.kv_layout = KvLayout::Varlen;
  c.variant.normalize = ir::Normalize::Custom;
  EXPECT_FALSE(make_plan(c).ok);
}

// Per-batch key lengths (KvLengthsLayout): the gfx90a forwards, the combine's rows dense; the
// backward keeps the bound in its mask (refused on the layout).
TEST(PlannerGfx90a, KvLengthsForwardOnTheLayout) {
  PlanRequest r = request(OpKind::Forward, true, 64, 64, 16);
  r.problem.kv_len = 8192;
  r.problem.kv_layout = KvLayout::KvLengths;
  r.overrides.kv_splits = 2;
  const LaunchPlan p = make_plan(r);
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_EQ(main_step(p).spec.describe(), "fwd gfx90a bf16 d64/64 64x32 w4 split kvlens");
  for (const Step& s : p.steps)
    if (s.spec.kind == Kind::FwdCombine) EXPECT_EQ(s.spec.layout, codegen::Layout::Dense);
  r.problem.kind = OpKind::Backward;
  EXPECT_FALSE(make_plan(r).ok);
}

TEST(PlannerGfx90a, OtherAmdTargetsAreRefusedByName) {
  PlanRequest r = request(OpKind::Forward, false);
  r.device.gfx = "gfx942";
  r.device.name = "AMD Instinct MI300X";
  const LaunchPlan p = make_plan(r);
  EXPECT_FALSE(p.ok);
  EXPECT_NE(p.reason.find("AMD Instinct MI300X (gfx942)"), std::string::npos) << p.reason;
  EXPECT_NE(p.reason.find("built for gfx90a"), std::string::npos) << p.reason;
}

TEST(HipDeviceCaps, TargetOfAGcnArchName) {
  using runner::gcn_target;
  EXPECT_EQ(gcn_target("gfx90a:sramecc+:xnack-"), "gfx90a");
  EXPECT_EQ(gcn_target("gfx90a"), "gfx90a");
  EXPECT_EQ(gcn_target("gfx942:sramecc+:xnack-"), "gfx942");
  EXPECT_EQ(gcn_target("gfx1100"), "gfx1100");
  EXPECT_EQ(gcn_target(""), "");
  EXPECT_EQ(gcn_target("gfx"), "");
  EXPECT_EQ(gcn_target("gfx90z"), "");
  EXPECT_EQ(gcn_target("AMD Instinct MI250X"), "");
}

// The field is found by its content wherever a release's struct puts it; the name field (the
// first 256 bytes) is never read as one.
TEST(HipDeviceCaps, FindsTheArchNameInAPropertiesStruct) {
  for (size_t offset : {396u, 1160u}) {
    std::vector<char> props(4096, '\0');
    std::strcpy(props.data(), "gfx90a marketing name");
    std::strcpy(props.data() + 300, "gfxtext");  // not a target: skipped
    std::strcpy(props.data() + offset, "gfx90a:sramecc+:xnack-");
    EXPECT_EQ(runner::find_gcn_arch_name(props.data(), props.size()), "gfx90a:sramecc+:xnack-");
  }
  std::vector<char> none(1024, '\0');
  EXPECT_EQ(runner::find_gcn_arch_name(none.data(), none.size()), "");
  std::vector<char> unterminated(300, 'x');
  unterminated[289] = '\0';
  std::memcpy(unterminated.data() + 290, "gfx90agfx9", 10);  // runs off the end
  EXPECT_EQ(runner::find_gcn_arch_name(unterminated.data(), unterminated.size()), "");
}

}  // namespace
}  // namespace ae::plan
