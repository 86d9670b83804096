// A paged KV cache in the kernels (templates/common/kv_layout.h PagedLayout): planned for the
// sm90 forward with tiles of keys that whole pages or whole tiles divide, refused elsewhere.
#include <gtest/gtest.h>

#include "codegen/instantiate.h"
#include "ir/variant.h"
#include "plan_fixtures.h"
#include "trace_builder.h"

namespace ae::plan {
namespace {

PlanRequest paged(const DeviceCaps& dev, int64_t page_size, int64_t q_len = 1) {
  PlanRequest r = testing::request(OpKind::Forward, dev, testing::plain(), 128, 128, q_len);
  r.problem.kv_len = 4096;
  r.problem.kv_layout = KvLayout::Paged;
  r.problem.page_size = page_size;
  return r;
}

TEST(PagedPlan, Sm90ForwardWithTilesThatPagesDivide) {
  for (int64_t ps : {16, 32, 64, 128, 256, 512}) {
    const LaunchPlan p = make_plan(paged(devices::h200(), ps));
    ASSERT_TRUE(p.ok) << ps << ": " << p.reason;
    EXPECT_EQ(p.family, "sm90");
    const codegen::KernelSpec& s = p.steps[0].spec;
    EXPECT_EQ(s.layout, codegen::Layout::Paged);
    EXPECT_EQ(s.page_size, ps);
    EXPECT_TRUE(ps % s.block_n == 0 || s.block_n % ps == 0) << s.describe();
    EXPECT_NE(s.describe().find(" page" + std::to_string(ps)), std::string::npos) << s.describe();
  }
  const LaunchPlan prefill = make_plan(paged(devices::h200(), 64, 4096));  // prefill on pages too
  ASSERT_TRUE(prefill.ok) << prefill.reason;
}

TEST(PagedPlan, RefusedWhereNoKernelAddressesPages) {
  LaunchPlan p = make_plan(paged(devices::a100(), 64));  // no sm90 forward
  EXPECT_FALSE(p.ok);
  EXPECT_NE(p.reason.find("sm90 forward only"), std::string::npos) << p.reason;
  p = make_plan(paged(devices::h200(), 12));
  EXPECT_FALSE(p.ok);
  EXPECT_NE(p.reason.find("multiples of 8"), std::string::npos) << p.reason;
  p = make_plan(paged(devices::h200(), 24));  // no tile of keys fits 24-row pages
  EXPECT_FALSE(p.ok);
  PlanRequest bwd = paged(devices::h200(), 64, 64);
  bwd.problem.kind = OpKind::Backward;
  EXPECT_FALSE(make_plan(bwd).ok);
}

TEST(PagedPlan, InstantiatedWithThePageSize) {
  test::TraceBuilder t;
  t.score(t.param("score"));
  const auto v = ir::build_variant(t.str());
  const LaunchPlan p = make_plan(paged(devices::h200(), 16));
  ASSERT_TRUE(p.ok) << p.reason;
  const std::string src = codegen::instantiate(v.get(), p.steps[0].spec);
  EXPECT_NE(src.find("ae::PagedLayout<16>"), std::string::npos) << src;
}

}  // namespace
}  // namespace ae::plan
