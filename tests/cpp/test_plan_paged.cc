// A paged KV cache in the kernels (templates/common/kv_layout.h PagedLayout): planned for the
// sm90 forward with tiles of keys that whole pages or whole tiles divide, for the sm80 family's
// forward and decode templates with any page size (a multiple of 8) elsewhere, and for the
// gfx90a forward (any page size); refused for the backward.
#include <gtest/gtest.h>

#include "codegen/instantiate.h"
#include "ir/variant.h"
#include "plan_fixtures.h"
#include "trace_builder.h"

namespace ae::plan {
namespace {

PlanRequest paged(const DeviceCaps& dev, int64_t page_size, int64_t q_len = 1, int d = 128) {
  PlanRequest r = testing::request(OpKind::Forward, dev, testing::plain(), d, d, q_len);
  r.problem.kv_len = 4096;
  r.problem.kv_layout = KvLayout::Paged;
  r.problem.page_size = page_size;
  return r;
}

void expect_paged(const LaunchPlan& p, int64_t ps) {
  const codegen::KernelSpec& s = testing::main_step(p).spec;
  EXPECT_EQ(s.layout, codegen::Layout::Paged) << s.describe();
  EXPECT_EQ(s.page_size, ps);
  EXPECT_NE(s.describe().find(" page" + std::to_string(ps)), std::string::npos) << s.describe();
}

TEST(PagedPlan, Sm90ForwardWithTilesThatPagesDivide) {
  for (int64_t ps : {16, 32, 64, 128, 256, 512}) {
    const LaunchPlan p = make_plan(paged(devices::h200(), ps));
    ASSERT_TRUE(p.ok) << ps << ": " << p.reason;
    EXPECT_EQ(p.family, "sm90");
    const codegen::KernelSpec& s = p.steps[0].spec;
    EXPECT_TRUE(ps % s.block_n == 0 || s.block_n % ps == 0) << s.describe();
    expect_paged(p, ps);
  }
  const LaunchPlan prefill = make_plan(paged(devices::h200(), 64, 4096));  // prefill on pages too
  ASSERT_TRUE(prefill.ok) << prefill.reason;
  EXPECT_EQ(prefill.family, "sm90");
}

// cp.async addresses rows one at a time: every multiple of 8, tile or no tile dividing it.
TEST(PagedPlan, Sm80FamilyOnOtherGpusWithAnyPageSize) {
  for (const DeviceCaps& dev : {devices::a100(), devices::ada()})
    for (int64_t ps : {8, 16, 24, 40, 64, 256, 512, 4096})
      for (int64_t q_len : {1, 16, 4096}) {
        const LaunchPlan p = make_plan(paged(dev, ps, q_len));
        ASSERT_TRUE(p.ok) << dev.label() << " " << ps << " " << q_len << ": " << p.reason;
        EXPECT_EQ(p.family, "sm80");
        expect_paged(p, ps);
        EXPECT_FALSE(testing::main_step(p).spec.decode);  // AE_DECODE off
      }
}

TEST(PagedPlan, DecodeTemplateOnPages) {
  for (const DeviceCaps& dev : {devices::a100(), devices::h200()})
    for (int64_t ps : {16, 24, 64, 256}) {
      PlanRequest r = paged(dev, ps, 4);
      r.overrides.enable_decode = true;
      const LaunchPlan p = make_plan(r);
      ASSERT_TRUE(p.ok) << ps << ": " << p.reason;
      EXPECT_EQ(p.family, "sm80");
      EXPECT_TRUE(testing::main_step(p).spec.decode) << testing::main_step(p).spec.describe();
      expect_paged(p, ps);
    }
}

// Hopper: the sm90 forward where one of its tiles fits the pages, the sm80 forward where none
// does (24-row pages) or where the sm90 forward is turned off; never the gather.
TEST(PagedPlan, HopperFallsBackToTheSm80FamilyNotTheGather) {
  for (int64_t q_len : {1, 4096}) {
    LaunchPlan p = make_plan(paged(devices::h200(), 24, q_len));
    ASSERT_TRUE(p.ok) << p.reason;
    EXPECT_EQ(p.family, "sm80");
    expect_paged(p, 24);
    PlanRequest off = paged(devices::h200(), 64, q_len);
    off.overrides.disable_sm90 = true;
    p = make_plan(off);
    ASSERT_TRUE(p.ok) << p.reason;
    EXPECT_EQ(p.family, "sm80");
    expect_paged(p, 64);
  }
  // Asked for the sm90 family alone, 24-row pages are refused with the reason.
  PlanRequest sm90 = paged(devices::h200(), 24);
  sm90.family = codegen::Family::Sm90;
  const LaunchPlan p = make_plan(sm90);
  EXPECT_FALSE(p.ok);
  EXPECT_NE(p.reason.find("no sm90 forward tile of keys fits pages of 24 rows"), std::string::npos)
      << p.reason;
}

// A tile's pages are held by a warp's lanes (sm80/tile_io.h tile_pages): a tile of keys that
// spans more than 32 pages is skipped for the next one in the table.
TEST(PagedPlan, Sm80TileSpanningMorePagesThanLanesIsSkipped) {
  PlanRequest r = paged(devices::a100(), 8, 4096, 16);  // (D16: 512 keys fit shared memory)
  r.overrides.sm80_fwd[0] = 4, r.overrides.sm80_fwd[1] = 1, r.overrides.sm80_fwd[2] = 512;
  LaunchPlan p = make_plan(r);
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_LE(testing::main_step(p).spec.block_n, 256);
  r.problem.kv_layout = KvLayout::Dense;  // dense: the override stands
  p = make_plan(r);
  ASSERT_TRUE(p.ok) << p.reason;
  EXPECT_EQ(testing::main_step(p).spec.block_n, 512);
}

// The gfx90a loaders look each row's page up: every tile, any page size; a split-KV launch's
// combine on dense rows.
TEST(PagedPlan, Gfx90aForwardWithAnyPageSize) {
  for (int64_t ps : {8, 16, 24, 64, 256}) {
    for (int64_t q_len : {1, 4096}) {
      PlanRequest r = paged(devices::mi250(), ps, q_len);
      r.overrides.kv_splits = q_len == 1 ? 4 : 1;
      const LaunchPlan p = make_plan(r);
      ASSERT_TRUE(p.ok) << ps << ": " << p.reason;
      EXPECT_EQ(p.family, "gfx90a");
      expect_paged(p, ps);
      for (const Step& s : p.steps)
        if (s.spec.kind == codegen::Kind::FwdCombine) EXPECT_EQ(s.spec.layout, codegen::Layout::Dense);
    }
  }
  PlanRequest bwd = paged(devices::mi250(), 64, 64);
  bwd.problem.kind = OpKind::Backward;
  const LaunchPlan p = make_plan(bwd);
  EXPECT_FALSE(p.ok);
  EXPECT_NE(p.reason.find("forwards only"), std::string::npos) << p.reason;
}

TEST(PagedPlan, RefusedWhereNoKernelAddressesPages) {
  LaunchPlan p;
  for (int64_t ps : {0, 4, 12, 20}) {
    p = make_plan(paged(devices::a100(), ps));
    EXPECT_FALSE(p.ok) << ps;
    EXPECT_NE(p.reason.find("multiples of 8"), std::string::npos) << p.reason;
  }
  PlanRequest bwd = paged(devices::h200(), 64, 64);
  bwd.problem.kind = OpKind::Backward;
  EXPECT_FALSE(make_plan(bwd).ok);
  bwd.device = devices::a100();
  EXPECT_FALSE(make_plan(bwd).ok);
  PlanRequest fp32 = paged(devices::a100(), 64);
  fp32.problem.dtype = ElemType::Float32;
  EXPECT_FALSE(make_plan(fp32).ok);
}

TEST(PagedPlan, InstantiatedWithThePageSize) {
  test::TraceBuilder t;
  t.score(t.param("score"));
  const auto v = ir::build_variant(t.str());
  for (const DeviceCaps& dev : {devices::h200(), devices::a100(), devices::mi250()}) {
    const LaunchPlan p = make_plan(paged(dev, 16));
    ASSERT_TRUE(p.ok) << p.reason;
    const std::string src = codegen::instantiate(v.get(), testing::main_step(p).spec);
    EXPECT_NE(src.find("ae::PagedLayout<16>"), std::string::npos) << src;
  }
}

}  // namespace
}  // namespace ae::plan
