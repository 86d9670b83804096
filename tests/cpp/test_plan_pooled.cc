// The gate-training forward (Problem::pool_block; nvidia/mma_rows.h store_block_max): planned
// for the NVIDIA forwards with tiles that blocks divide or that divide blocks, never split, never
// the decode template; refused with the reason elsewhere.
#include <gtest/gtest.h>

#include "common/shapes.h"
#include "plan_fixtures.h"

namespace ae::plan {
namespace {

PlanRequest pooled(const DeviceCaps& dev, int64_t pool, const VariantTraits& v = testing::causal(),
                   int64_t q_len = 4096) {
  PlanRequest r = testing::request(OpKind::Forward, dev, v, 128, 128, q_len);
  r.problem.pool_block = pool;
  return r;
}

TEST(PooledPlan, NvidiaForwardsWriteBlockMaxima) {
  for (const DeviceCaps& dev : {devices::h200(), devices::a100()}) {
    for (int64_t pool : {32, 64, 128, 256}) {
      const LaunchPlan p = make_plan(pooled(dev, pool));
      ASSERT_TRUE(p.ok) << p.reason;
      const codegen::KernelSpec& s = testing::main_step(p).spec;
      EXPECT_EQ(s.pool_block, pool);
      EXPECT_TRUE(s.block_n % pool == 0 || pool % s.block_n == 0) << s.describe();
      EXPECT_EQ(p.attn.n_pool_blocks, (4096 + pool - 1) / pool);
      EXPECT_NE(s.describe().find(" pool" + std::to_string(pool)), std::string::npos);
    }
  }
}

TEST(PooledPlan, NeverSplitNorDecodeTemplate) {
  PlanRequest r = pooled(devices::h200(), 64, testing::plain(), 1);  // one query: decode's shape
  r.problem.kv_len = 4096;
  r.overrides.kv_splits = 8;
  r.overrides.enable_decode = true;
  const LaunchPlan p = make_plan(r);
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_EQ(p.attn.kv_splits, 1);
  EXPECT_FALSE(testing::main_step(p).spec.kv_split);
  EXPECT_FALSE(testing::main_step(p).spec.decode);
  ASSERT_EQ(p.steps.size(), 2u);  // no combine: the forward, then its map
  EXPECT_EQ(p.steps.back().spec.kind, codegen::Kind::PoolMap);
  EXPECT_EQ(p.steps.back().spec.describe(), "pool_map sm_90a");
  EXPECT_EQ(p.steps.back().threads, kPoolThreads);
  EXPECT_EQ(p.steps.back().grid.x, (2u * 16u * (1u + 63u) / 64u + 7u) / 8u);  // a warp per query block
  EXPECT_EQ(p.attn.pool_block, 64);
  r.problem.pool_block = 0;  // the same call without blocks: the decode template
  EXPECT_TRUE(testing::main_step(make_plan(r)).spec.decode);
  r.overrides.enable_decode = false;  // and the prefill one split
  EXPECT_GT(make_plan(r).attn.kv_splits, 1);
}

TEST(PooledPlan, RefusedWithTheReason) {
  EXPECT_NE(make_plan(pooled(devices::h200(), 20)).reason.find("multiples of 8"), std::string::npos);
  EXPECT_NE(make_plan(pooled(devices::mi250(), 64)).reason.find("NVIDIA GPUs"), std::string::npos);
  VariantTraits none = testing::plain();
  none.normalize = ir::Normalize::None;
  EXPECT_NE(make_plan(pooled(devices::h200(), 64, none)).reason.find("softmax forwards only"),
            std::string::npos);
  PlanRequest bwd = pooled(devices::h200(), 64);
  bwd.problem.kind = OpKind::Backward;
  EXPECT_FALSE(make_plan(bwd).ok);
  PlanRequest paged = pooled(devices::h200(), 64);
  paged.problem.kv_layout = KvLayout::Paged;
  paged.problem.page_size = 64;
  EXPECT_NE(make_plan(paged).reason.find("dense K and V"), std::string::npos);
}

}  // namespace
}  // namespace ae::plan
