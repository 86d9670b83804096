// The planner (plan/planner.h) for the device classes the engine targets, without a GPU:
// which family and tiles it picks, the steps and workspaces of a forward and a backward, its
// refusals (the reason the fallback warning prints), and its grids and shape fields.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <tuple>

#include "plan/planner.h"
#include "plan/tile_tables.h"
#include "plan_fixtures.h"

namespace ae::plan {
namespace {

using codegen::Family;
using codegen::Kind;

using testing::causal;
using testing::main_step;
using testing::plain;

// A document mask: the ids are a captured tensor, so its blocks can change between calls.
VariantTraits document() {
  VariantTraits v = causal();
  v.key = "document";
  v.mask_reads_buffers = true;
  return v;
}

PlanRequest request(OpKind kind, DeviceCaps dev, VariantTraits v, int d = 128, int64_t s = 4096) {
  return testing::request(kind, dev, v, d, d, s);
}

std::vector<Kind> kinds(const LaunchPlan& p) {
  std::vector<Kind> k;
  for (const Step& s : p.steps) k.push_back(s.spec.kind);
  return k;
}

TEST(Planner, HopperForwardIsTheSm90Template) {
  for (const DeviceCaps& dev : {devices::h100(), devices::h200()}) {
    const LaunchPlan p = make_plan(request(OpKind::Forward, dev, plain()));
    ASSERT_TRUE(p.ok) << p.reason;
    EXPECT_EQ(p.family, "sm90");
    ASSERT_EQ(kinds(p), std::vector<Kind>{Kind::Forward});
    const Step& s = p.steps[0];
    EXPECT_EQ(s.spec.arch, "sm_90a");
    EXPECT_EQ(s.spec.describe(), "fwd90 sm_90a bf16 d128/128 128x128 w12 s3 ov pp sa");
    EXPECT_EQ(s.threads, 384);
    EXPECT_EQ(s.smem, smem_bytes(s.spec));
    EXPECT_LE(s.smem, dev.smem_per_block);
    // (query blocks, query heads, batch), and the shape fields the kernel reads
    EXPECT_EQ(s.grid.x, 32u);
    EXPECT_EQ(s.grid.y, 16u);
    EXPECT_EQ(s.grid.z, 2u);
    EXPECT_EQ(p.attn.n_q_blocks, 32);
    EXPECT_EQ(p.attn.n_kv_blocks, 32);  // 4096 keys in blocks of 128
    EXPECT_EQ(p.attn.group, 4);
    EXPECT_FLOAT_EQ(p.attn.scale, 0.125f);
    EXPECT_FLOAT_EQ(p.attn.scale_log2, 0.125f * 1.4426950408889634f);
    EXPECT_EQ(p.attn.head_group, 1);  // no mask: one head at a time
    EXPECT_TRUE(p.workspaces.empty());
  }
}

// The persistent sm90 forward (opt-in, AE_PERSISTENT): only where its tiles outnumber the CTAs
// (a CTA per SM, or a given count), never for a split-KV launch, the sm80 family or the
// backward.
TEST(Planner, PersistentForwardWhereTilesOutnumberTheSms) {
  PlanRequest r = request(OpKind::Forward, devices::h200(), causal());
  auto grid_of = [](const LaunchPlan& p) {
    const Step& s = main_step(p);
    return std::vector<unsigned>{s.grid.x, s.grid.y, s.grid.z};
  };
  // Off by default: a CTA per tile, no counter
  LaunchPlan p = make_plan(r);
  EXPECT_FALSE(main_step(p).spec.persistent);
  EXPECT_EQ(grid_of(p), (std::vector<unsigned>{32, 16, 2}));
  EXPECT_EQ(p.workspace(WorkspaceId::TileCounter), nullptr);
  r.overrides.persistent = 8;  // forced: 8 CTAs take the 1024 tiles
  p = make_plan(r);
  EXPECT_TRUE(main_step(p).spec.persistent);
  EXPECT_EQ(grid_of(p), (std::vector<unsigned>{8, 1, 1}));
  ASSERT_NE(p.workspace(WorkspaceId::TileCounter), nullptr);
  EXPECT_EQ(p.workspace(WorkspaceId::TileCounter)->shape, std::vector<int64_t>{1});
  r.overrides.persistent = -1;  // "on": a CTA per SM, the counter zeroed per call
  p = make_plan(r);
  EXPECT_EQ(grid_of(p), (std::vector<unsigned>{132, 1, 1}));
  EXPECT_EQ(main_step(p).spec.describe(), "fwd90 sm_90a bf16 d128/128 128x128 w12 s3 ov pp sa pers");
  ASSERT_EQ(p.workspaces.size(), 3u);  // the block states, the counter and the V-check flag
  EXPECT_TRUE(p.workspace(WorkspaceId::TileCounter)->zeroed);
  EXPECT_TRUE(p.workspace(WorkspaceId::TileCounter)->cache_key.empty());
  r.problem.batch = 1;
  r.problem.q_len = r.problem.kv_len = 1024;  // 8 x 16 tiles: fewer than the 132 SMs
  EXPECT_FALSE(main_step(make_plan(r)).spec.persistent);
  r.problem.q_len = r.problem.kv_len = 1280;  // 10 x 16 = 160
  EXPECT_EQ(grid_of(make_plan(r)), (std::vector<unsigned>{132, 1, 1}));
  r.overrides.disable_sm90 = true;  // the sm80 forward is not persistent
  EXPECT_FALSE(main_step(make_plan(r)).spec.persistent);
  r.overrides.disable_sm90 = false;
  r.problem.kind = OpKind::Backward;
  EXPECT_FALSE(main_step(make_plan(r)).spec.persistent);
  r.problem.kind = OpKind::Forward;
  r.problem.q_len = 1;  // decode: split-KV, one wave
  r.problem.kv_len = 32768;
  r.overrides.persistent = 8;
  EXPECT_FALSE(main_step(make_plan(r)).spec.persistent);
  // AE_PERSISTENT: on ("1", "on", "true": a CTA per SM), a count of 2 or more, or off
  for (const auto& [text, value] : std::vector<std::pair<const char*, int>>{
           {"on", -1}, {"1", -1}, {"true", -1}, {"5", 5}, {"0", 0}, {"off", 0}}) {
    setenv("AE_PERSISTENT", text, 1);
    EXPECT_EQ(TuningOverrides::from_environment().persistent, value) << text;
  }
  unsetenv("AE_PERSISTENT");
  EXPECT_EQ(TuningOverrides::from_environment().persistent, 0);
}

TEST(Planner, DisablingSm90OrHeadDimsWithoutItTakeSm80) {
  PlanRequest r = request(OpKind::Forward, devices::h200(), plain());
  r.overrides.disable_sm90 = true;
  LaunchPlan p = make_plan(r);
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_EQ(p.family, "sm80");
  EXPECT_EQ(p.steps[0].spec.describe(), "fwd sm_90a bf16 d128/128 128x64 w4 mt2 r0");
  p = make_plan(request(OpKind::Forward, devices::h200(), plain(), 48));
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_EQ(p.family, "sm80");
}

TEST(Planner, PaddedHeadDimsRunTheNextSm90Kernels) {
  // D96 (and 80, 112): the D128 kernels, storing the tensors' columns only; dq_accum as wide
  // as the main kernel's head dim, dQ as the tensor's.
  for (int d : {80, 96, 112}) {
    LaunchPlan p = make_plan(request(OpKind::Forward, devices::h200(), plain(), d));
    ASSERT_TRUE(p.ok) << p.reason;
    EXPECT_EQ(p.family, "sm90") << d;
    EXPECT_EQ(main_step(p).spec.d_qk, 128);
    EXPECT_EQ(main_step(p).spec.d_v, 128);
    EXPECT_TRUE(main_step(p).spec.padded);
    EXPECT_EQ(p.attn.d_qk, d);
    EXPECT_EQ(p.attn.d_v, d);
    p = make_plan(request(OpKind::Backward, devices::h200(), plain(), d));
    ASSERT_TRUE(p.ok) << p.reason;
    EXPECT_EQ(p.family, "sm90") << d;
    EXPECT_EQ(main_step(p).spec.d_qk, 128);
    EXPECT_TRUE(main_step(p).spec.padded);
    EXPECT_EQ(p.rows.d_qk, d);
    EXPECT_EQ(p.rows.acc_cols, 128);
    const auto acc = std::find_if(p.workspaces.begin(), p.workspaces.end(),
                                  [](const Workspace& w) { return w.id == WorkspaceId::DqAccum; });
    ASSERT_NE(acc, p.workspaces.end());
    EXPECT_EQ(acc->shape.back(), 128);
  }
  // Pairs without a kernel of their own take the smallest pair above them that has one
  // (least Dqk + Dv): no Dv 192 in the forward (Dv 256), no 192 / 192, 64 / 256 or 256 / 64
  // in the backward (the wide kernels).
  struct Padded {
    int d_qk, d_v, fwd_qk, fwd_v, bwd_qk, bwd_v;
  };
  for (const Padded& c : {Padded{160, 160, 192, 256, 256, 256}, Padded{192, 192, 192, 256, 256, 256},
                          Padded{64, 256, 64, 256, 128, 256}, Padded{256, 64, 256, 64, 256, 128},
                          Padded{64, 192, 64, 256, 128, 256}, Padded{128, 192, 128, 256, 128, 256}}) {
    for (const bool bwd : {false, true}) {
      PlanRequest r = request(bwd ? OpKind::Backward : OpKind::Forward, devices::h200(), plain(),
                              c.d_qk);
      r.problem.d_v = c.d_v;
      const LaunchPlan p = make_plan(r);
      ASSERT_TRUE(p.ok) << p.reason;
      EXPECT_EQ(p.family, "sm90") << c.d_qk << "/" << c.d_v << (bwd ? " bwd" : " fwd");
      EXPECT_EQ(main_step(p).spec.d_qk, bwd ? c.bwd_qk : c.fwd_qk) << c.d_qk << "/" << c.d_v;
      EXPECT_EQ(main_step(p).spec.d_v, bwd ? c.bwd_v : c.fwd_v) << c.d_qk << "/" << c.d_v;
      const bool exact = bwd ? c.bwd_qk == c.d_qk && c.bwd_v == c.d_v
                             : c.fwd_qk == c.d_qk && c.fwd_v == c.d_v;
      EXPECT_EQ(main_step(p).spec.padded, !exact) << c.d_qk << "/" << c.d_v;
    }
  }
  // Below 64 nothing is padded (sm80), nor dims that are not multiples of 16.
  EXPECT_EQ(make_plan(request(OpKind::Backward, devices::h200(), plain(), 48)).family, "sm80");
  EXPECT_FALSE(make_plan(request(OpKind::Forward, devices::h200(), plain(), 72)).ok);
  // On sm_80 nothing is padded.
  const LaunchPlan a = make_plan(request(OpKind::Backward, devices::a100(), plain(), 96));
  ASSERT_TRUE(a.ok) << a.reason;
  EXPECT_EQ(main_step(a).spec.d_qk, 96);
  EXPECT_FALSE(main_step(a).spec.padded);
  EXPECT_FALSE(main_step(make_plan(request(OpKind::Backward, devices::h200(), plain()))).spec.padded);
  EXPECT_EQ(a.rows.acc_cols, 96);
}

TEST(Planner, MaskedForwardBuildsBlockStatesFirst) {
  const LaunchPlan p = make_plan(request(OpKind::Forward, devices::h200(), causal()));
  ASSERT_TRUE(p.ok) << p.reason;
  // (the V-check pass between: VCheckPassBeforeForwardsThatScanV)
  ASSERT_EQ(kinds(p), (std::vector<Kind>{Kind::BlockState, Kind::VCheck, Kind::Forward}));
  const Step& bs = p.steps[0];
  EXPECT_EQ(bs.spec.family, Family::Common);
  EXPECT_TRUE(bs.fills_workspace);
  EXPECT_EQ(bs.fills, WorkspaceId::BlockStates);
  EXPECT_EQ(bs.threads, 128);
  // one CTA per tile of the main kernel's blocks (128 keys); the mask depends on neither b nor h
  EXPECT_EQ(bs.grid.x, 32u);
  EXPECT_EQ(bs.grid.y, 32u);
  EXPECT_EQ(bs.grid.z, 1u);
  EXPECT_EQ(p.block_states.block_m, 128);
  EXPECT_EQ(p.block_states.block_n, 128);
  const Workspace* w = p.workspace(WorkspaceId::BlockStates);
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->shape, (std::vector<int64_t>{1, 32, 32}));
  EXPECT_FALSE(w->cache_key.empty());  // index-only mask: kept across calls
  EXPECT_EQ(p.attn.state_stride_b, 0);
  EXPECT_EQ(p.attn.state_stride_h, 0);
  // K and V of a head: 4096 x 256 x 2 bytes, and 4 query heads share them: 512 KB per query
  // head, 8 MB of L2 for the sm90 forward -> 16 heads.
  EXPECT_EQ(p.attn.head_group, 16);
  EXPECT_FALSE(w->key_by_captured);
  // A mask that reads a captured tensor: kept while the tensors stay the same.
  const LaunchPlan d = make_plan(request(OpKind::Forward, devices::h200(), document()));
  EXPECT_FALSE(d.workspace(WorkspaceId::BlockStates)->cache_key.empty());
  EXPECT_TRUE(d.workspace(WorkspaceId::BlockStates)->key_by_captured);
}

TEST(Planner, PerHeadMasksHaveATablePerHead) {
  VariantTraits v = causal();
  v.mask_per_head = true;
  v.mask_per_batch = true;
  const LaunchPlan p = make_plan(request(OpKind::Forward, devices::h200(), v));
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_EQ(p.workspace(WorkspaceId::BlockStates)->shape, (std::vector<int64_t>{32, 32, 32}));
  EXPECT_EQ(p.steps[0].grid.z, 32u);
  EXPECT_EQ(p.attn.state_stride_h, 32 * 32);
  EXPECT_EQ(p.attn.state_stride_b, 32 * 32 * 16);
  EXPECT_TRUE(p.block_states.per_head && p.block_states.per_batch);
}

TEST(Planner, BackwardIsThreeLaunchesAroundTheMainKernel) {
  for (const DeviceCaps& dev : {devices::h100(), devices::h200(), devices::a100()}) {
    const LaunchPlan p = make_plan(request(OpKind::Backward, dev, causal()));
    ASSERT_TRUE(p.ok) << p.reason;
    const bool hopper = dev.major == 9;
    EXPECT_EQ(p.family, hopper ? "sm90" : "sm80");
    EXPECT_EQ(p.rows.acc_tiled, hopper ? 1 : 0);  // the sm90 backward adds whole dQ tiles
    ASSERT_EQ(kinds(p), (std::vector<Kind>{Kind::BlockState, Kind::BwdPrep, Kind::Backward,
                                           Kind::BwdDq}));
    const Step& b = main_step(p);
    EXPECT_EQ(b.spec.block_m, 64);
    EXPECT_EQ(b.spec.block_n, 128);
    // (key blocks, KV heads, batch)
    EXPECT_EQ(b.grid.x, 32u);
    EXPECT_EQ(b.grid.y, 4u);
    EXPECT_EQ(b.grid.z, 2u);
    EXPECT_LE(b.smem, dev.smem_per_block);
    // dQ accumulated in fp32 rows padded to whole query blocks; the row statistics
    EXPECT_EQ(p.workspace(WorkspaceId::DqAccum)->shape, (std::vector<int64_t>{2, 16, 64 * 64, 128}));
    EXPECT_EQ(p.workspace(WorkspaceId::Delta)->shape, (std::vector<int64_t>{2, 16, 4096}));
    EXPECT_NE(p.workspace(WorkspaceId::Lse2), nullptr);
    // The row passes: a group of lanes per query row, 256 threads
    const Step& prep = p.steps[1];
    EXPECT_EQ(prep.row_lanes, 16);
    EXPECT_EQ(prep.threads, 256);
    EXPECT_EQ(prep.grid.x, 2u * 16 * 4096 / (256 / 16));
    EXPECT_EQ(p.rows.acc_rows, 64 * 64);
    EXPECT_EQ(p.block_states.block_m, 64);  // the backward's own tiles
    EXPECT_EQ(p.block_states.block_n, 128);
    // no halves of the keys for a mask_mod's table (only block tensors': the registers)
    EXPECT_EQ(p.block_states.half_n, 0);
    EXPECT_FALSE(b.spec.key_halves);
  }
}

TEST(Planner, BackwardGradientsOnlyWhereAsked) {
  PlanRequest r = request(OpKind::Backward, devices::h200(), plain());
  r.problem.captured = {{"float32", 2, true}, {"int64", 1, false}};
  const LaunchPlan p = make_plan(r);
  ASSERT_TRUE(p.ok) << p.reason;
  const Step& b = main_step(p);
  EXPECT_EQ(b.spec.buffer_dtypes, (std::vector<std::string>{"float32", "int64"}));
  EXPECT_EQ(b.spec.buffer_grads, (std::vector<bool>{true, false}));
  EXPECT_NE(b.spec.describe().find(" dbuf0"), std::string::npos);
  // The forward's kernel carries no gradient atomics.
  r.problem.kind = OpKind::Forward;
  EXPECT_TRUE(main_step(make_plan(r)).spec.buffer_grads.empty());
}

// Gradients of captured tensors go to a copy in shared memory where it fits next to the
// backward's own tiles (the step's shared memory covers both), else to global atomics.
TEST(Planner, CapturedGradientsInSharedMemoryWhereTheyFit) {
  auto plan_with = [](DeviceCaps dev, int64_t heads, int64_t width, bool global = false) {
    PlanRequest r = request(OpKind::Backward, dev, plain());
    r.problem.captured = {{"float32", 2, true, heads * width}, {"int64", 1, false, 1 << 20}};
    r.overrides.global_grads = global;
    const LaunchPlan p = make_plan(r);
    EXPECT_TRUE(p.ok) << p.reason;
    return main_step(p);
  };
  using codegen::GradSink;
  // H200, sm90 D128 (~199 KB of 227): a 16 x 257 bias table (16 KB) fits, 16 x 1025 does not.
  const Step small = plan_with(devices::h200(), 16, 257);
  EXPECT_EQ(small.spec.family, Family::Sm90);
  EXPECT_EQ(small.spec.grad_sink, GradSink::Shared);
  EXPECT_EQ(small.smem, smem_bytes(small.spec) + 4 * 16 * 257);  // only the tensor with a grad
  EXPECT_LE(small.smem, devices::h200().smem_per_block);
  EXPECT_NE(small.spec.describe().find(" dbuf0 smem"), std::string::npos);
  const Step large = plan_with(devices::h200(), 16, 1025);
  EXPECT_EQ(large.spec.grad_sink, GradSink::Global);
  EXPECT_EQ(large.smem, smem_bytes(large.spec));
  EXPECT_EQ(large.spec.describe().find(" smem"), std::string::npos);
  EXPECT_NE(small.spec.describe(), large.spec.describe());  // distinct registry keys
  // The override keeps global atomics.
  const Step forced = plan_with(devices::h200(), 16, 257, true);
  EXPECT_EQ(forced.spec.grad_sink, GradSink::Global);
  EXPECT_EQ(forced.smem, smem_bytes(forced.spec));
  // A100 (sm80, 163 KB): the table's first fitting tile (128 keys, one stage) has room for
  // the small table; the large one takes the 64-key tile that leaves room for it.
  const Step a_small = plan_with(devices::a100(), 16, 257);
  EXPECT_EQ(a_small.spec.grad_sink, GradSink::Shared);
  EXPECT_EQ(a_small.spec.block_n, 128);
  const Step a_large = plan_with(devices::a100(), 16, 1025);
  EXPECT_EQ(a_large.spec.grad_sink, GradSink::Shared);
  EXPECT_EQ(a_large.spec.block_n, 64);
  EXPECT_EQ(a_large.smem, smem_bytes(a_large.spec) + 4 * 16 * 1025);
  EXPECT_LE(a_large.smem, devices::a100().smem_per_block);
  // Too large for any tile: global atomics at the table's first fitting tile.
  const Step a_huge = plan_with(devices::a100(), 64, 1025);
  EXPECT_EQ(a_huge.spec.grad_sink, GradSink::Global);
  EXPECT_EQ(a_huge.spec.block_n, 128);
  // No gradient asked for, or a forward: nothing in shared memory.
  PlanRequest r = request(OpKind::Backward, devices::h200(), plain());
  r.problem.captured = {{"float32", 2, false, 16 * 257}};
  EXPECT_EQ(main_step(make_plan(r)).spec.grad_sink, GradSink::Global);
  r.problem.captured[0].wants_grad = true;
  r.problem.kind = OpKind::Forward;
  const Step fwd = main_step(make_plan(r));
  EXPECT_EQ(fwd.spec.grad_sink, GradSink::Global);
  EXPECT_EQ(fwd.smem, smem_bytes(fwd.spec));
}

TEST(Planner, NormalizeNoneHasNoRowStatistics) {
  VariantTraits v = plain();
  v.normalize = ir::Normalize::None;
  const LaunchPlan p = make_plan(request(OpKind::Backward, devices::h200(), v));
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_EQ(p.workspace(WorkspaceId::Delta), nullptr);
  EXPECT_EQ(p.workspace(WorkspaceId::Lse2), nullptr);
  EXPECT_NE(p.workspace(WorkspaceId::DqAccum), nullptr);
  const LaunchPlan f = make_plan(request(OpKind::Forward, devices::h200(), v));
  EXPECT_FALSE(f.steps[0].spec.overlap);  // the sm90 table's choice for none
}

TEST(Planner, CustomNormalizationsRunFusedKernelsUnlessTurnedOff) {
  VariantTraits v = plain();
  v.normalize = ir::Normalize::Custom;
  LaunchPlan p = make_plan(request(OpKind::Forward, devices::h200(), v));
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_EQ(kinds(p), std::vector<Kind>{Kind::Forward});  // no split-KV combine
  p = make_plan(request(OpKind::Backward, devices::h200(), v));
  ASSERT_TRUE(p.ok) << p.reason;
  const std::vector<Kind> k = kinds(p);
  EXPECT_NE(std::find(k.begin(), k.end(), Kind::BwdRowsCustom), k.end());
  // The log domain skips the wide tiles as a loading mask does, but keeps the overlap (the
  // rule for masks that load is measured for a mask_mod's own loads only); its weight and
  // stat per score count as special functions (no softmax ahead of P V)
  VariantTraits log = v;
  log.log_domain = true;
  const ae::codegen::KernelSpec f =
      main_step(make_plan(request(OpKind::Forward, devices::h200(), log))).spec;
  EXPECT_EQ(f.describe(), "fwd90 sm_90a bf16 d128/128 128x128 w12 s3 ov pp");
  for (OpKind kind : {OpKind::Forward, OpKind::Backward}) {  // AE_CUSTOM_NORM=0
    PlanRequest r = request(kind, devices::h200(), v);
    r.overrides.custom_norm_kernels = false;
    p = make_plan(r);
    EXPECT_FALSE(p.ok);
    EXPECT_NE(p.reason.find("AE_CUSTOM_NORM=0"), std::string::npos) << p.reason;
  }
}

TEST(Planner, A100TakesSm80WithTilesThatFit) {
  LaunchPlan p = make_plan(request(OpKind::Forward, devices::a100(), plain()));
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_EQ(p.family, "sm80");
  EXPECT_EQ(p.steps[0].spec.arch, "sm_80");
  EXPECT_EQ(p.steps[0].spec.block_n, 64);
  // D256: 64-key tiles need 200 KB; 4 warps of 32 keys fit in 163 KB
  p = make_plan(request(OpKind::Forward, devices::a100(), plain(), 256));
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_EQ(p.steps[0].spec.warps, 4);
  EXPECT_EQ(p.steps[0].spec.block_n, 32);
  // the backward at D256: single-buffered
  p = make_plan(request(OpKind::Backward, devices::a100(), plain(), 256));
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_EQ(main_step(p).spec.stages, 1);
  EXPECT_EQ(main_step(p).spec.block_n, 64);
}

TEST(Planner, AdaTakesSmallTilesOrSaysWhyNot) {
  const DeviceCaps ada = devices::ada();
  LaunchPlan p = make_plan(request(OpKind::Forward, ada, plain()));
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_EQ(p.steps[0].spec.arch, "sm_89");
  EXPECT_EQ(p.steps[0].spec.block_n, 32);
  EXPECT_TRUE(p.steps[0].spec.compile_options().empty());
  p = make_plan(request(OpKind::Backward, ada, plain(), 128));
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_LE(main_step(p).smem, ada.smem_per_block);
  // The backward at D256 fits nowhere in 99 KB: the reason names the shortfall.
  p = make_plan(request(OpKind::Backward, ada, plain(), 256));
  EXPECT_FALSE(p.ok);
  EXPECT_NE(p.reason.find("bytes of shared memory, the device allows 101376"), std::string::npos)
      << p.reason;
  // Every pick of every kind fits the device.
  for (const DeviceCaps& dev : {devices::h100(), devices::a100(), ada})
    for (OpKind kind : {OpKind::Forward, OpKind::Backward})
      for (int d : {64, 96, 128, 192, 256}) {
        PlanRequest r = request(kind, dev, causal(), d);
        r.problem.d_v = d == 192 ? 128 : d;
        const LaunchPlan q = make_plan(r);
        if (!q.ok) {
          EXPECT_TRUE(kind == OpKind::Backward && d > 128 && dev.smem_per_block < 110000) << q.reason;
          continue;
        }
        for (const Step& s : q.steps) EXPECT_LE(s.smem, dev.smem_per_block) << s.spec.describe();
      }
}

TEST(Planner, RefusalsSayWhy) {
  auto why = [](PlanRequest r) {
    const LaunchPlan p = make_plan(r);
    EXPECT_FALSE(p.ok);
    return p.reason;
  };
  PlanRequest r = request(OpKind::Forward, devices::h200(), plain());
  r.problem.dtype = ElemType::Float32;
  EXPECT_EQ(why(r), "float32 inputs have no fused kernel (bf16 and fp16 do)");
  r = request(OpKind::Forward, devices::h200(), plain());
  r.problem.captured.assign(9, {"float32", 1, false});
  EXPECT_EQ(why(r), "9 captured tensors; kernels take at most 8");
  r.problem.captured = {{"float32", 5, false}};
  EXPECT_NE(why(r).find("rank 5"), std::string::npos);
  r.problem.captured = {{"complex64", 1, false}};
  EXPECT_NE(why(r).find("complex64 has no kernel load"), std::string::npos);
  r = request(OpKind::Forward, devices::h200(), plain(), 512);
  EXPECT_NE(why(r).find("no sm80 kernel"), std::string::npos);
  EXPECT_NE(why(r).find("no sm90 kernel"), std::string::npos);  // both families said no
  r = request(OpKind::Forward, devices::h200(), plain());
  r.problem.kv_len = int64_t{1} << 31;
  EXPECT_NE(why(r).find("32-bit"), std::string::npos);
  DeviceCaps volta = devices::a100();
  volta.major = 7;
  EXPECT_NE(why(request(OpKind::Forward, volta, plain())).find("compute capability 7.0"),
            std::string::npos);
  r = request(OpKind::Backward, devices::h200(), plain(), 48);
  r.family = Family::Sm90;  // below 64: no kernel, nothing padded
  EXPECT_NE(why(r).find("no sm90 backward"), std::string::npos);
  EXPECT_NE(why(r).find("(48, 48)"), std::string::npos);
  r = request(OpKind::Backward, devices::a100(), plain());
  r.family = Family::Sm90;  // not on an sm_80 device
  EXPECT_NE(why(r).find("no sm90 bwd kernel"), std::string::npos);
}

TEST(Planner, HopperBackwardFamilies) {
  // The sm90 backward at head dims 64, 128 and 256 (wide: 64 keys per CTA); the sm80 one
  // when disabled.
  for (int d : {64, 128, 256}) {
    const LaunchPlan p = make_plan(request(OpKind::Backward, devices::h200(), plain(), d));
    ASSERT_TRUE(p.ok) << p.reason;
    EXPECT_EQ(p.family, "sm90") << d;
    const Step& b = main_step(p);
    EXPECT_EQ(b.threads, 384);
    EXPECT_EQ(b.spec.arch, "sm_90a");
    EXPECT_EQ(b.spec.block_n, d == 256 ? 64 : 128) << d;
    EXPECT_LE(b.smem, devices::h200().smem_per_block);
  }
  PlanRequest r = request(OpKind::Backward, devices::h200(), plain());
  r.overrides.disable_sm90_bwd = true;
  EXPECT_EQ(make_plan(r).family, "sm80");
  // Past 128: Dqk 64, 128 or 192 and Dv 64 or 128 (dK and dV in registers), unequal too;
  // the pairs without a kernel padded to one that has (PaddedHeadDimsRunTheNextSm90Kernels).
  for (auto [dqk, dv, want] : {std::tuple{192, 128, "sm90"}, std::tuple{128, 64, "sm90"},
                               std::tuple{64, 128, "sm90"}, std::tuple{192, 64, "sm90"},
                               std::tuple{64, 192, "sm90"}, std::tuple{128, 192, "sm90"},
                               std::tuple{192, 192, "sm90"}, std::tuple{96, 96, "sm90"},
                               std::tuple{256, 64, "sm90"}, std::tuple{256, 128, "sm90"},
                               std::tuple{128, 256, "sm90"}, std::tuple{192, 256, "sm90"},
                               std::tuple{256, 192, "sm90"}, std::tuple{48, 48, "sm80"}}) {
    r = request(OpKind::Backward, devices::h200(), plain());
    r.problem.d_qk = dqk, r.problem.d_v = dv;
    const LaunchPlan p = make_plan(r);
    ASSERT_TRUE(p.ok) << p.reason;
    EXPECT_EQ(p.family, want) << dqk << "/" << dv;
    if (p.family == "sm90") EXPECT_LE(main_step(p).smem, devices::h100().smem_per_block);
  }
  // A captured tensor's gradient at 192 + 128 spilled (a relative bias): the sm80 backward
  // there, the sm90 one at 128 + 128 and without the gradient.
  VariantTraits bias = plain();
  bias.key = "bias", bias.score_loads = true;
  for (auto [dqk, grad, want] : {std::tuple{192, true, "sm80"}, std::tuple{192, false, "sm90"},
                                 std::tuple{128, true, "sm90"}}) {
    r = request(OpKind::Backward, devices::h200(), bias);
    r.problem.d_qk = dqk, r.problem.d_v = 128;
    r.problem.captured = {{"float32", 2, grad, 16 * 65}};
    EXPECT_EQ(make_plan(r).family, want) << dqk << " grad " << grad;
  }
  // Padded past 256 columns (64 / 192 runs as 128 / 256): the same refusal, saying so.
  r = request(OpKind::Backward, devices::h200(), bias);
  r.problem.d_qk = 64, r.problem.d_v = 192;
  r.problem.captured = {{"float32", 2, true, 16 * 65}};
  EXPECT_EQ(make_plan(r).family, "sm80");
  r.family = Family::Sm90;
  const LaunchPlan refused = make_plan(r);
  EXPECT_FALSE(refused.ok);
  EXPECT_NE(refused.reason.find("(64, 192) (run as 128 / 256)"), std::string::npos) << refused.reason;
}

TEST(Planner, DeterministicBackwardHasTileCounters) {
  // Both families: the main kernel's spec says so (its own cache key and instantiation), and
  // an int32 counter per dQ tile comes with it, zeroed by the prep pass.
  for (const DeviceCaps& dev : {devices::h200(), devices::a100()}) {
    PlanRequest r = request(OpKind::Backward, dev, causal());
    EXPECT_EQ(make_plan(r).workspace(WorkspaceId::DqOrder), nullptr);
    EXPECT_FALSE(main_step(make_plan(r)).spec.deterministic);
    r.problem.deterministic = true;
    const LaunchPlan p = make_plan(r);
    ASSERT_TRUE(p.ok) << p.reason;
    const Step& b = main_step(p);
    EXPECT_TRUE(b.spec.deterministic);
    EXPECT_NE(b.spec.describe().find(" det"), std::string::npos) << b.spec.describe();
    const Workspace* w = p.workspace(WorkspaceId::DqOrder);
    ASSERT_NE(w, nullptr);
    EXPECT_EQ(w->dtype, ElemType::Int32);
    EXPECT_EQ(w->shape, (std::vector<int64_t>{2, 16, 64}));  // [B, Hq, 4096 / 64]
    EXPECT_TRUE(w->cache_key.empty());                      // zeroed every call
  }
}

TEST(Planner, EmptyProblemsHaveNoSteps) {
  PlanRequest r = request(OpKind::Forward, devices::h200(), causal());
  r.problem.kv_len = 0;
  LaunchPlan p = make_plan(r);
  EXPECT_TRUE(p.ok);
  EXPECT_TRUE(p.steps.empty());
  r = request(OpKind::Backward, devices::h200(), plain());
  r.problem.batch = 0;
  p = make_plan(r);
  EXPECT_TRUE(p.ok);
  EXPECT_TRUE(p.steps.empty());
}

TEST(Planner, OverridesReachThePlan) {
  PlanRequest r = request(OpKind::Forward, devices::h200(), causal());
  r.overrides.head_group = 3;
  EXPECT_EQ(make_plan(r).attn.head_group, 3);
  r.overrides.sm90_fwd[0] = 64;
  EXPECT_EQ(main_step(make_plan(r)).spec.block_n, 64);
  EXPECT_EQ(make_plan(r).attn.n_kv_blocks, 64);  // block counts follow the tiles
  // AE_MASK_LOADS: the forward's kernel only, in its key (the source: test_generated_code.py)
  EXPECT_EQ(TuningOverrides::from_lookup([](const char* n) {
              return std::string(n) == "AE_MASK_LOADS" ? "2" : nullptr;
            }).mask_load_mode, 2);
  EXPECT_EQ(TuningOverrides::from_lookup([](const char* n) {
              return std::string(n) == "AE_MASK_LOADS" ? "3" : nullptr;
            }).mask_load_mode, -1);
  // AE_SM90_FWD: empty fields stay unset, a field that is not an integer ends the parse
  auto sm90 = [](const char* text) {
    const TuningOverrides o = TuningOverrides::from_lookup(
        [text](const char* n) { return std::string(n) == "AE_SM90_FWD" ? text : nullptr; });
    return std::vector<int>(o.sm90_fwd, o.sm90_fwd + 5);
  };
  const int u = TuningOverrides::kUnset;
  EXPECT_EQ(sm90(",,,,0"), (std::vector<int>{u, u, u, u, 0}));
  EXPECT_EQ(sm90("128,3,1,1"), (std::vector<int>{128, 3, 1, 1, u}));
  EXPECT_EQ(sm90("176,2,1,1,1"), (std::vector<int>{176, 2, 1, 1, 1}));
  EXPECT_EQ(sm90("128,x,1"), (std::vector<int>{128, u, u, u, u}));
  EXPECT_EQ(sm90("-64,2"), (std::vector<int>{-64, 2, u, u, u}));
  EXPECT_EQ(sm90("128, 3,1,1 \n"), (std::vector<int>{128, 3, 1, 1, u}));
  PlanRequest d = request(OpKind::Forward, devices::h200(), document());
  d.overrides.mask_load_mode = 0;
  const ae::codegen::KernelSpec fwd = main_step(make_plan(d)).spec;
  EXPECT_EQ(fwd.mask_load_mode, 0);
  EXPECT_NE(fwd.describe().find(" ml0"), std::string::npos) << fwd.describe();
  PlanRequest db = request(OpKind::Backward, devices::h200(), document());
  db.overrides.mask_load_mode = 0;
  for (const Step& s : make_plan(db).steps) EXPECT_EQ(s.spec.mask_load_mode, -1);
}

// Decode: one query tile per head and batch leaves most SMs idle, so the forward cuts the keys
// into ranges (tiles x ranges within one wave, at least 4 key blocks each) and a combine step
// merges the partial outputs. Prefill-sized problems and short keys do not split.
TEST(Planner, DecodeSplitsTheKeys) {
  PlanRequest r = request(OpKind::Forward, devices::h200(), plain(), 128, 32768);
  r.problem.batch = 1;
  r.problem.q_heads = 32;
  r.problem.kv_heads = 8;
  r.problem.q_len = 1;
  LaunchPlan p = make_plan(r);
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_EQ(p.attn.kv_splits, 4);  // 32 tiles: 132 / 32 = 4 ranges
  EXPECT_EQ(p.attn.kv_split_blocks, 64);  // 256 blocks of 128 keys
  EXPECT_EQ(kinds(p), (std::vector<Kind>{Kind::Forward, Kind::FwdCombine}));
  EXPECT_TRUE(main_step(p).spec.kv_split);
  EXPECT_EQ(main_step(p).grid.z, 4u);  // batch x ranges
  EXPECT_EQ(p.steps[1].grid.x, 8u);    // 32 rows, 4 per CTA
  ASSERT_NE(p.workspace(WorkspaceId::OPart), nullptr);
  EXPECT_EQ(p.workspace(WorkspaceId::OPart)->shape, (std::vector<int64_t>{4, 1, 32, 1, 128}));
  EXPECT_EQ(p.workspace(WorkspaceId::LsePart)->shape, (std::vector<int64_t>{4, 1, 32, 1}));
  EXPECT_EQ(p.attn.row_stats, 1);
  // Forced through the override; a count past the key blocks is cut to one block per range,
  // and the last range is never empty.
  r.overrides.kv_splits = 1000;
  EXPECT_EQ(make_plan(r).attn.kv_splits, 256);
  r.overrides.kv_splits = 3;
  p = make_plan(r);
  EXPECT_EQ(p.attn.kv_splits, 3);
  EXPECT_EQ(p.attn.kv_split_blocks, 86);
  r.overrides.kv_splits = 1;
  EXPECT_FALSE(main_step(make_plan(r)).spec.kv_split);
  r.overrides.kv_splits = 0;
  r.problem.kv_len = 512;  // 3 key blocks: one range
  EXPECT_EQ(kinds(make_plan(r)), (std::vector<Kind>{Kind::Forward}));
  r.problem.kv_len = 32768;
  r.problem.q_len = 4096;  // prefill: 32 x 32 tiles fill the SMs
  EXPECT_EQ(make_plan(r).attn.kv_splits, 1);
  // The backward never splits.
  r.problem.q_len = 1;
  r.problem.kind = OpKind::Backward;
  EXPECT_EQ(make_plan(r).attn.kv_splits, 1);
}

TEST(Planner, FewQueryRowsTakeTheDecodeTemplate) {
  for (const DeviceCaps& dev : {devices::h100(), devices::h200(), devices::a100()}) {
    PlanRequest r = request(OpKind::Forward, dev, plain());
    r.problem.q_len = 1;
    r.overrides.kv_splits = 1;  // one range: the kernel alone
    EXPECT_FALSE(main_step(make_plan(r)).spec.decode);  // opt-in (AE_DECODE) for now
    r.overrides.enable_decode = true;
    LaunchPlan p = make_plan(r);
    ASSERT_TRUE(p.ok) << p.reason;
    EXPECT_EQ(p.family, "sm80");
    ASSERT_EQ(kinds(p), std::vector<Kind>{Kind::Forward});
    const Step& s = p.steps[0];
    EXPECT_TRUE(s.spec.decode);
    EXPECT_EQ(s.spec.block_m, 16);
    EXPECT_EQ(s.spec.block_n, 128);
    EXPECT_EQ(s.threads, 128);
    EXPECT_EQ(s.smem, smem_bytes(s.spec));
    EXPECT_EQ(s.grid.x, 1u);  // one 16-row tile
    EXPECT_EQ(p.attn.n_kv_blocks, 32);
    // 16 rows still decode; 17 are a prefill.
    r.problem.q_len = 16;
    EXPECT_TRUE(main_step(make_plan(r)).spec.decode);
    r.problem.q_len = 17;
    EXPECT_FALSE(main_step(make_plan(r)).spec.decode);
    // Head dims past 128: 64 keys per block (128 do not fit shared memory).
    r.problem.q_len = 1;
    PlanRequest big = request(OpKind::Forward, dev, plain(), 256);
    big.problem.q_len = 1;
    big.overrides.enable_decode = true;
    EXPECT_EQ(main_step(make_plan(big)).spec.block_n, 64);
    EXPECT_TRUE(main_step(make_plan(big)).spec.decode);
    // AE_DECODE="64,2": the first tile's keys and warps.
    r.overrides.decode[0] = 64, r.overrides.decode[1] = 2;
    EXPECT_EQ(main_step(make_plan(r)).spec.describe().substr(0, 3), "fwd");
    EXPECT_EQ(main_step(make_plan(r)).spec.block_n, 64);
    EXPECT_EQ(main_step(make_plan(r)).spec.warps, 2);
    r.overrides.decode[0] = 48;  // not whole 16-key slices per warp: ignored
    EXPECT_EQ(main_step(make_plan(r)).spec.block_n, 128);
    // A backward is never a decode (its plan has no forward step).
    r.problem.kind = OpKind::Backward;
    EXPECT_FALSE(main_step(make_plan(r)).spec.decode);
  }
}

TEST(Planner, VCheckPassBeforeForwardsThatScanV) {
  // A mask and 4096 x 4 query rows per key head: the pass, its zeroed flag, before the forward
  PlanRequest r = request(OpKind::Forward, devices::h200(), document());
  LaunchPlan p = make_plan(r);
  ASSERT_TRUE(p.ok) << p.reason;
  ASSERT_EQ(kinds(p), (std::vector<Kind>{Kind::BlockState, Kind::VCheck, Kind::Forward}));
  const Step& check = p.steps[1];
  EXPECT_EQ(check.spec.family, Family::Common);
  EXPECT_EQ(check.spec.describe(), "v_check sm_90a bf16");
  EXPECT_EQ(check.threads, 256);
  // 2 x 4 key heads; 132 SMs x 8 CTAs over them, at most a CTA per 16 rows of 128 values
  EXPECT_EQ(check.grid.y, 8u);
  EXPECT_EQ(check.grid.x, 132u);
  const Workspace* flag = p.workspace(WorkspaceId::VFlag);
  ASSERT_NE(flag, nullptr);
  EXPECT_EQ(flag->shape, std::vector<int64_t>{1});
  EXPECT_EQ(flag->dtype, ElemType::Int32);
  EXPECT_TRUE(flag->zeroed);
  EXPECT_TRUE(flag->cache_key.empty());
  // A score_mod writing -inf masks without a mask_mod; plain attention scans nothing
  VariantTraits inf_mod = plain();
  inf_mod.score_masks = true;
  EXPECT_NE(make_plan(request(OpKind::Forward, devices::h200(), inf_mod)).workspace(WorkspaceId::VFlag),
            nullptr);
  EXPECT_EQ(make_plan(request(OpKind::Forward, devices::h200(), plain())).workspace(WorkspaceId::VFlag),
            nullptr);
  // Few query rows per key head (256 x 4 < 8192): the pass would cost more than it saves
  r.problem.q_len = 256;
  EXPECT_EQ(make_plan(r).workspace(WorkspaceId::VFlag), nullptr);
  r.overrides.v_check = 1;  // forced (this short forward splits its keys: the combine after)
  p = make_plan(r);
  EXPECT_EQ(kinds(p), (std::vector<Kind>{Kind::BlockState, Kind::VCheck, Kind::Forward,
                                         Kind::FwdCombine}));
  // short keys: one CTA per 16 rows at most
  r.problem.kv_len = 100;
  EXPECT_EQ(make_plan(r).steps[1].grid.x, 7u);
  // past 65535 batch x key heads: grid y stops there (the kernel strides over the rest)
  r.problem.batch = 20000;
  EXPECT_EQ(make_plan(r).steps[1].grid.y, 65535u);
  r.problem.batch = 2;
  r.problem.kv_len = 4096;
  r.overrides.trust_v = true;  // the checks compiled out: nothing to skip
  EXPECT_EQ(make_plan(r).workspace(WorkspaceId::VFlag), nullptr);
  r.overrides.trust_v = false;
  r.problem.q_len = 4096;
  r.overrides.v_check = 0;  // turned off
  EXPECT_EQ(make_plan(r).workspace(WorkspaceId::VFlag), nullptr);
  // None for backwards or gfx90a; the sm80 forward (A100: 108 SMs, D64: 32 rows per CTA)
  r.overrides.v_check = -1;
  EXPECT_EQ(make_plan(request(OpKind::Backward, devices::h200(), document())).workspace(WorkspaceId::VFlag),
            nullptr);
  p = make_plan(request(OpKind::Forward, devices::a100(), document(), 64));
  ASSERT_EQ(kinds(p), (std::vector<Kind>{Kind::BlockState, Kind::VCheck, Kind::Forward}));
  EXPECT_EQ(p.steps[1].grid.x, 108u);
  EXPECT_EQ(make_plan(request(OpKind::Forward, devices::mi250(), document())).workspace(WorkspaceId::VFlag),
            nullptr);
}

TEST(Planner, DescribeListsStepsAndWorkspaces) {
  const std::string d = make_plan(request(OpKind::Backward, devices::h200(), causal())).describe();
  EXPECT_NE(d.find("block_state sm_90a grid (32,64,1)"), std::string::npos) << d;
  EXPECT_NE(d.find("bwd_prep sm_90a bf16"), std::string::npos) << d;
  EXPECT_NE(d.find("workspace dq_accum [2, 16, 4096, 128]"), std::string::npos) << d;
  EXPECT_NE(d.find("workspace block_states [1, 64, 32] (kept across calls)"), std::string::npos) << d;
}

}  // namespace
}  // namespace ae::plan
