// MLA decode (templates/sm90/mla_decode.h): the latent head's (576, 512) with V in K's memory is
// planned for its own template on Hopper, whole or split over the keys, dense or paged; without
// V in K, on another GPU or for a custom normalization it is refused with what it needs.
#include <gtest/gtest.h>

#include "codegen/instantiate.h"
#include "codegen/kernel_abi.h"
#include "ir/variant.h"
#include "plan_fixtures.h"
#include "sm90/shapes.h"
#include "trace_builder.h"

namespace ae::plan {
namespace {

// B sequences of 128 query heads packed as rows against one latent head (gqa_pack.py).
PlanRequest mla(const DeviceCaps& dev, int64_t batch = 1, int64_t kv_len = 8192,
                int64_t rows = 128) {
  PlanRequest r = testing::request(OpKind::Forward, dev, testing::plain(), 576, 512, rows);
  r.problem.batch = batch;
  r.problem.q_heads = r.problem.kv_heads = 1;
  r.problem.kv_len = kv_len;
  r.problem.kv_layout = KvLayout::KvLengths;
  r.problem.v_in_k = true;
  return r;
}

TEST(MlaPlan, ItsOwnTemplateOnHopper) {
  const LaunchPlan p = make_plan(mla(devices::h200(), 128));
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_EQ(p.family, "sm90 (MLA decode)");
  const Step& s = testing::main_step(p);
  EXPECT_TRUE(s.spec.mla);
  EXPECT_EQ(s.spec.block_m, 64);
  EXPECT_EQ(s.spec.block_n, 64);
  EXPECT_EQ(s.threads, 384);
  EXPECT_EQ(s.smem, sm90::mla_smem_bytes(576));
  EXPECT_LE(s.smem, devices::h200().smem_per_block);
  EXPECT_FALSE(s.spec.kv_split);  // 2 query blocks x 128 sequences fill the GPU
  EXPECT_EQ(s.grid.x, 2u);
  EXPECT_EQ(s.grid.z, 128u);
  EXPECT_NE(s.spec.describe().find(" mla"), std::string::npos) << s.spec.describe();
  // Q and K's tensor maps only: V is read from K's tiles.
  EXPECT_EQ(codegen::abi_of(s.spec).args.size(), 4u);
}

TEST(MlaPlan, SplitsTheKeysWhereFewSequencesLeaveSmsIdle) {
  const LaunchPlan p = make_plan(mla(devices::h200(), 1, 32768, 16));
  ASSERT_TRUE(p.ok) << p.reason;
  const Step& s = testing::main_step(p);
  EXPECT_TRUE(s.spec.mla && s.spec.kv_split) << p.describe();
  EXPECT_GT(p.attn.kv_splits, 1);
  EXPECT_EQ(p.steps.back().spec.kind, codegen::Kind::FwdCombine);
  ASSERT_NE(p.workspace(WorkspaceId::OPart), nullptr);
  EXPECT_EQ(p.workspace(WorkspaceId::OPart)->shape.back(), 512);
}

TEST(MlaPlan, PagedWithFlashMlasPagesAndTheWindowsBytes) {
  for (int64_t ps : {16, 64, 256}) {
    PlanRequest r = mla(devices::h200(), 8);
    r.problem.kv_layout = KvLayout::Paged;
    r.problem.page_size = ps;
    const LaunchPlan p = make_plan(r);
    ASSERT_TRUE(p.ok) << ps << ": " << p.reason;
    const Step& s = testing::main_step(p);
    EXPECT_TRUE(s.spec.mla);
    EXPECT_EQ(s.smem, sm90::mla_smem_bytes(576) + 4 * 32);
    EXPECT_LE(s.smem, devices::h200().smem_per_block);
  }
}

TEST(MlaPlan, PagesThatNeitherDivideNorAreDividedBy64AreRefused) {
  // (a box of keys would cross a page's end: the caller gathers the pages instead)
  for (int64_t ps : {24, 48, 96}) {
    PlanRequest r = mla(devices::h200(), 8);
    r.problem.kv_layout = KvLayout::Paged;
    r.problem.page_size = ps;
    EXPECT_FALSE(make_plan(r).ok) << ps;
  }
}

TEST(MlaPlan, RefusedWithWhatItNeeds) {
  PlanRequest r = mla(devices::h200());
  r.problem.v_in_k = false;  // V a tensor of its own: no kernel takes (576, 512)
  LaunchPlan p = make_plan(r);
  EXPECT_FALSE(p.ok);
  EXPECT_NE(p.reason.find("V is K's first 512 columns"), std::string::npos) << p.reason;
  p = make_plan(mla(devices::a100()));
  EXPECT_FALSE(p.ok);
  EXPECT_NE(p.reason.find("sm_90"), std::string::npos) << p.reason;
  r = mla(devices::h200());
  r.variant.normalize = ir::Normalize::Custom;
  EXPECT_FALSE(make_plan(r).ok);
  r = mla(devices::h200());
  r.problem.kind = OpKind::Backward;  // decode only
  EXPECT_FALSE(make_plan(r).ok);
  r = mla(devices::h200());
  r.problem.d_qk = 512;  // not MLA's shape: V in K changes nothing
  r.problem.d_v = 512;
  EXPECT_FALSE(make_plan(r).ok);
}

TEST(MlaPlan, InstantiatedFromTheMlaTemplate) {
  test::TraceBuilder t;
  t.score(t.param("score"));
  const auto v = ir::build_variant(t.str());
  const LaunchPlan p = make_plan(mla(devices::h200(), 128));
  ASSERT_TRUE(p.ok) << p.reason;
  const std::string src = codegen::instantiate(v.get(), testing::main_step(p).spec);
  EXPECT_NE(src.find("sm90/mla_decode.h"), std::string::npos) << src;
  EXPECT_NE(src.find("attention_mla_decode<Cfg>(p, Variant{va}, &tq, &tk)"), std::string::npos);
  EXPECT_EQ(src.find("TmaDesc tv"), std::string::npos) << src;
}

}  // namespace
}  // namespace ae::plan
