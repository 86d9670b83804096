// Packed sequences in the kernels (templates/common/kv_layout.h VarlenLayout): planned for the
// NVIDIA forwards (a split-KV launch's combine on the same layout, never the persistent
// scheduler, whose tiles are the grid's) and backwards (not deterministic), and the gfx90a ones.
#include <gtest/gtest.h>

#include "codegen/instantiate.h"
#include "ir/variant.h"
#include "plan_fixtures.h"
#include "trace_builder.h"

namespace ae::plan {
namespace {

PlanRequest varlen(const DeviceCaps& dev, int64_t q_len, int64_t kv_len, int64_t batch = 16) {
  PlanRequest r = testing::request(OpKind::Forward, dev, testing::plain(), 128, 128, q_len);
  r.problem.batch = batch;
  r.problem.kv_len = kv_len;
  r.problem.kv_layout = KvLayout::Varlen;
  return r;
}

const Step& main_of(const LaunchPlan& p) {
  for (const Step& s : p.steps)
    if (s.spec.kind == codegen::Kind::Forward) return s;
  return p.steps.front();
}

TEST(VarlenPlan, NvidiaForwardsOnTheLayout) {
  for (const DeviceCaps& dev : {devices::h200(), devices::a100()}) {
    const LaunchPlan p = make_plan(varlen(dev, 1024, 1024));
    ASSERT_TRUE(p.ok) << p.reason;
    const codegen::KernelSpec& s = main_of(p).spec;
    EXPECT_EQ(s.layout, codegen::Layout::Varlen);
    EXPECT_NE(s.describe().find(" varlen"), std::string::npos) << s.describe();
  }
}

TEST(VarlenPlan, NeverPersistent) {
  PlanRequest r = varlen(devices::h200(), 4096, 4096);
  r.overrides.persistent = 8;  // forced: still a CTA per tile (tiles past a sequence leave)
  const LaunchPlan p = make_plan(r);
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_FALSE(main_of(p).spec.persistent);
  EXPECT_EQ(main_of(p).grid.x, static_cast<unsigned>(p.attn.n_q_blocks));  // the grid's tiles
}

TEST(VarlenPlan, SplitKvCombinesOnTheLayout) {
  PlanRequest r = varlen(devices::h200(), 1, 65536, 1);  // one decode row: splits fill the SMs
  const LaunchPlan p = make_plan(r);
  ASSERT_TRUE(p.ok) << p.reason;
  ASSERT_GT(p.attn.kv_splits, 1);
  EXPECT_EQ(p.steps.back().spec.kind, codegen::Kind::FwdCombine);
  EXPECT_EQ(p.steps.back().spec.layout, codegen::Layout::Varlen);
}

// describe() keys the process's kernel registry: the combine and the block-state pass of
// packed sequences must not share a key with the dense ones (a dense combine reused on packed
// sequences wrote rows past the LSE: an illegal address on the H200).
TEST(VarlenPlan, LayoutStepsKeyedApartFromDenseOnes) {
  PlanRequest r = varlen(devices::h200(), 1, 65536, 2);
  r.variant = testing::causal();
  r.problem = with_sparsity(r.problem, r.variant);
  PlanRequest d = r;
  d.problem.kv_layout = KvLayout::Dense;
  const LaunchPlan pv = make_plan(r), pd = make_plan(d);
  ASSERT_TRUE(pv.ok && pd.ok) << pv.reason << pd.reason;
  int compared = 0;
  for (const codegen::Kind k : {codegen::Kind::FwdCombine, codegen::Kind::BlockState})
    for (const Step& sv : pv.steps)
      for (const Step& sd : pd.steps)
        if (sv.spec.kind == k && sd.spec.kind == k) {
          ++compared;
          EXPECT_NE(sv.spec.describe(), sd.spec.describe());
          EXPECT_NE(sv.spec.describe().find(" varlen"), std::string::npos) << sv.spec.describe();
        }
  EXPECT_EQ(compared, 2);
}

TEST(VarlenPlan, BackwardOnNvidiaNotDeterministic) {
  for (const DeviceCaps& dev : {devices::h200(), devices::a100()}) {
    PlanRequest bwd = varlen(dev, 1024, 1024);
    bwd.problem.kind = OpKind::Backward;
    const LaunchPlan p = make_plan(bwd);
    ASSERT_TRUE(p.ok) << p.reason;
    bool main = false;
    for (const Step& s : p.steps)
      if (s.spec.kind == codegen::Kind::Backward) {
        main = true;
        EXPECT_EQ(s.spec.layout, codegen::Layout::Varlen);
      }
    EXPECT_TRUE(main);
    bwd.problem.deterministic = true;
    const LaunchPlan d = make_plan(bwd);
    EXPECT_FALSE(d.ok);
    EXPECT_NE(d.reason.find("not deterministic"), std::string::npos) << d.reason;
  }
}

TEST(VarlenPlan, MaskedTablesPerBatchBuiltPerCall) {
  // A mask that ignores the batch still gets a table per batch (each sequence's tiles past its
  // own lengths are empty there), built per call (the lengths are device data).
  PlanRequest r = varlen(devices::h200(), 1024, 1024);
  r.variant = testing::causal();
  r.problem = with_sparsity(r.problem, r.variant);
  r.problem.kind = OpKind::Backward;
  const LaunchPlan p = make_plan(r);
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_TRUE(p.block_states.per_batch);
  EXPECT_GT(p.attn.state_stride_b, 0);
  bool table = false;
  for (const Step& s : p.steps)
    if (s.spec.kind == codegen::Kind::BlockState) {
      table = true;
      EXPECT_EQ(s.spec.layout, codegen::Layout::Varlen);
    }
  EXPECT_TRUE(table);
  for (const Workspace& w : p.workspaces)
    if (w.id == WorkspaceId::BlockStates) EXPECT_TRUE(w.cache_key.empty());
}

TEST(VarlenPlan, Gfx90aOnAmd) {  // (test_plan_gfx90a.cc has the details)
  const LaunchPlan p = make_plan(varlen(devices::mi250(), 1024, 1024));
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_EQ(main_of(p).spec.family, codegen::Family::Gfx90a);
  EXPECT_EQ(main_of(p).spec.layout, codegen::Layout::Varlen);
}

TEST(VarlenPlan, InstantiatedWithTheLayout) {
  test::TraceBuilder t;
  t.score(t.param("score"));
  const auto v = ir::build_variant(t.str());
  const LaunchPlan p = make_plan(varlen(devices::h200(), 1024, 1024));
  ASSERT_TRUE(p.ok) << p.reason;
  const std::string src = codegen::instantiate(v.get(), main_of(p).spec);
  EXPECT_NE(src.find("ae::VarlenLayout"), std::string::npos) << src;
}

}  // namespace
}  // namespace ae::plan
