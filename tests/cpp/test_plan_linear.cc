// Linear attention's plans (plan/linear_plan.h): the chunked forward's two passes and the
// backward's three on NVIDIA GPUs for scalar and per-channel decays and head dims 64 / 128, the
// decode step everywhere; refusals say why.
#include <gtest/gtest.h>

#include <cstdlib>
#include <utility>
#include <vector>

#include "common/shapes.h"
#include "plan/linear_plan.h"
#include "plan/overrides.h"
#include "sm80/shapes.h"

namespace ae::plan {
namespace {

LinearProblem problem(bool step, int64_t d_k = 128, int64_t d_v = 128, int64_t t_len = 1000) {
  LinearProblem p;
  p.step = step;
  p.batch = 2, p.heads = 16, p.t_len = step ? 1 : t_len, p.d_k = d_k, p.d_v = d_v;
  p.scale = 0.125;
  return p;
}

TEST(LinearPlan, ChunkedForwardIsAStatePassThenAnOutputPass) {
  for (const DeviceCaps& dev : {devices::h200(), devices::a100(), devices::ada()}) {
    const LaunchPlan p = plan_linear(problem(false, 128, 64), dev);
    ASSERT_TRUE(p.ok) << p.reason;
    ASSERT_EQ(p.steps.size(), 2u);
    EXPECT_EQ(p.steps[0].spec.kind, codegen::Kind::LinearState);
    EXPECT_EQ(p.steps[1].spec.kind, codegen::Kind::LinearOut);
    EXPECT_EQ(p.linear.n_chunks, (1000 + 63) / 64);
    // 64 x 32 tiles of the 128 x 64 state (scalar decays) where 64 x 64 ones (2 x 16 heads x
    // 2 tiles) leave SMs idle: on the H200 and the A100, not on the L4's 58
    EXPECT_EQ(p.steps[0].grid.x, dev.multiprocessors > 64 ? 4u : 2u) << dev.name;
    EXPECT_EQ(p.steps[1].grid.x, 16u);  // a CTA per chunk
    EXPECT_EQ(p.steps[1].grid.y, 16u);
    EXPECT_EQ(p.steps[1].grid.z, 2u);
    EXPECT_EQ(p.steps[1].smem, sm80::linear_out_smem_bytes(128, 64));
    EXPECT_EQ(p.steps[1].spec.describe(), "linear_out " + dev.arch() + " bf16 d128/64");
    EXPECT_FLOAT_EQ(p.linear.scale, 0.125f);
  }
}

TEST(LinearPlan, BackwardIsTheStatePassAReversePassAndTheGradients) {
  LinearProblem pb = problem(false, 128, 128);
  pb.backward = true;
  const LaunchPlan p = plan_linear(pb, devices::h200());
  ASSERT_TRUE(p.ok) << p.reason;
  ASSERT_EQ(p.steps.size(), 3u);
  EXPECT_EQ(p.steps[0].spec.kind, codegen::Kind::LinearState);
  EXPECT_EQ(p.steps[1].spec.kind, codegen::Kind::LinearDState);
  EXPECT_EQ(p.steps[1].grid.x, 8u);  // the state's 64 x 32 tiles, as the state pass
  EXPECT_EQ(p.steps[2].spec.kind, codegen::Kind::LinearGrads);
  EXPECT_EQ(p.steps[2].grid.x, 16u);
  EXPECT_EQ(p.steps[2].smem, sm80::linear_grads_smem_bytes(128, 128));
  // Its shared memory at 128 / 128 is past an Ada GPU's: refused there, with the reason.
  const LaunchPlan ada = plan_linear(pb, devices::ada());
  ASSERT_FALSE(ada.ok);
  EXPECT_NE(ada.reason.find("gradients' pass needs"), std::string::npos) << ada.reason;
  EXPECT_TRUE(plan_linear(problem(false, 128, 128), devices::ada()).ok);  // (the forward fits)
}

TEST(LinearPlan, GlaBackwardHasItsOwnGradientsPass) {
  LinearProblem pb = problem(false, 128, 128);
  pb.per_channel = true;
  pb.backward = true;
  for (const DeviceCaps& dev : {devices::h200(), devices::a100()}) {  // (under sm_80's 163 KB)
    const LaunchPlan p = plan_linear(pb, dev);
    ASSERT_TRUE(p.ok) << p.reason;
    ASSERT_EQ(p.steps.size(), 3u);
    EXPECT_EQ(p.steps[0].spec.describe(), "linear_state " + dev.arch() + " bf16 d128/128 pc cols64");
    EXPECT_EQ(p.steps[1].spec.describe(), "linear_dstate " + dev.arch() + " bf16 d128/128 pc cols64");
    EXPECT_EQ(p.steps[2].spec.describe(), "linear_grads " + dev.arch() + " bf16 d128/128 pc");
    EXPECT_EQ(p.steps[1].smem, sm80::linear_state_smem_bytes(true));
    EXPECT_EQ(p.steps[2].smem, sm80::linear_grads_smem_bytes(128, 128, true));
    EXPECT_EQ(p.steps[2].grid.x, 16u);
  }
  // One state tile instead of two and no P tile make room for every channel's prefix sums
  // and the decays' terms: under an A100's 163 KB.
  EXPECT_LE(sm80::linear_grads_smem_bytes(128, 128, true), devices::a100().smem_per_block);
  EXPECT_NE(plan_linear(pb, devices::ada()).reason.find("gradients' pass needs"), std::string::npos);
  LinearProblem small = problem(false, 64, 64);
  small.per_channel = small.backward = true;
  EXPECT_TRUE(plan_linear(small, devices::ada()).ok);
}

TEST(LinearPlan, StatePassesTakeHalfTilesOnRequest) {
  LinearProblem pb = problem(false, 128, 128);
  pb.backward = true;
  pb.per_channel = true;  // (64 columns by default)
  EXPECT_EQ(plan_linear(pb, devices::h200()).steps[0].grid.x, 4u);
  pb.state_cols = 32;
  const LaunchPlan p = plan_linear(pb, devices::h200());
  ASSERT_TRUE(p.ok) << p.reason;
  for (int i : {0, 1}) {  // the state pass and the reverse pass: 64 x 32 tiles, twice the CTAs
    EXPECT_EQ(p.steps[i].grid.x, 8u);
    EXPECT_EQ(p.steps[i].spec.block_n, 32);
    EXPECT_EQ(p.steps[i].smem, sm80::linear_state_smem_bytes(true, 32));
  }
  EXPECT_LT(sm80::linear_state_smem_bytes(false, 32), sm80::linear_state_smem_bytes(false));
  EXPECT_EQ(p.steps[2].grid.x, 16u);  // the gradients' pass is per chunk, as before
  EXPECT_EQ(p.steps[2].spec.describe(), "linear_grads sm_90a bf16 d128/128 pc");
  EXPECT_LT(sm80::linear_state_smem_bytes(true, 32), sm80::linear_state_smem_bytes(true));
  pb.state_cols = 48;  // (not a tile the kernels take: the default's)
  EXPECT_EQ(plan_linear(pb, devices::h200()).steps[0].grid.x, 4u);
  pb.per_channel = false;  // scalar decays: 32 where 64-column tiles fill less than a wave
  pb.state_cols = 0;         // (2 x 16 heads x 4 tiles: 128 < 132 SMs)
  EXPECT_EQ(plan_linear(pb, devices::h200()).steps[0].grid.x, 8u);
  pb.state_cols = 64;
  EXPECT_EQ(plan_linear(pb, devices::h200()).steps[0].grid.x, 4u);
  pb.state_cols = 0;
  pb.batch = 4;  // 256 tiles of 64 columns: 64
  EXPECT_EQ(plan_linear(pb, devices::h200()).steps[0].grid.x, 4u);
  pb.state_cols = 32;
  EXPECT_EQ(plan_linear(pb, devices::h200()).steps[0].grid.x, 8u);
  pb.state_cols = 0;
  pb.batch = 1, pb.n_seqs = 3, pb.n_chunks = 20;  // packed: the sequences count, 192 tiles
  EXPECT_EQ(plan_linear(pb, devices::h200()).steps[0].grid.x, 4u);
}

TEST(LinearPlan, StateColumnsFromTheEnvironment) {
  for (const auto& [text, value] : std::vector<std::pair<const char*, int>>{
           {"32", 32}, {"64", 64}, {"48", 0}, {"", 0}}) {
    setenv("AE_LINEAR_STATE_COLS", text, 1);
    EXPECT_EQ(TuningOverrides::from_environment().linear_state_cols, value) << text;
  }
  unsetenv("AE_LINEAR_STATE_COLS");
  EXPECT_EQ(TuningOverrides::from_environment().linear_state_cols, 0);
}

TEST(LinearPlan, DecodeStepEverywhere) {
  for (const DeviceCaps& dev : {devices::h200(), devices::mi250()}) {
    LinearProblem pb = problem(true, 96, 200);
    pb.per_channel = true;
    const LaunchPlan p = plan_linear(pb, dev);
    ASSERT_TRUE(p.ok) << p.reason;
    ASSERT_EQ(p.steps.size(), 1u);
    EXPECT_EQ(p.steps[0].spec.kind, codegen::Kind::LinearStep);
    EXPECT_EQ(p.steps[0].threads, kLinearStepCols);
    EXPECT_EQ(p.steps[0].grid.x, (200u + kLinearStepCols - 1) / kLinearStepCols);
    EXPECT_EQ(p.linear.per_channel, 1);
  }
}

TEST(LinearPlan, RefusalsSayWhy) {
  auto reason = [](LinearProblem pb, const DeviceCaps& dev) { return plan_linear(pb, dev).reason; };
  EXPECT_NE(reason(problem(false, 96), devices::h200()).find("64 or 128"), std::string::npos);
  EXPECT_NE(reason(problem(false), devices::mi250()).find("mma.sync"), std::string::npos);
  LinearProblem gla = problem(false);
  gla.per_channel = true;
  EXPECT_TRUE(plan_linear(gla, devices::h200()).ok);  // the forward takes GLA's gates
  EXPECT_EQ(plan_linear(gla, devices::h200()).steps[1].spec.describe(), "linear_out sm_90a bf16 d128/128 pc");
  LinearProblem fp32 = problem(false);
  fp32.dtype = ElemType::Float32;
  EXPECT_NE(reason(fp32, devices::h200()).find("bf16 and fp16"), std::string::npos);
  LinearProblem fp16 = problem(false);
  fp16.dtype = ElemType::Float16;
  EXPECT_NE(reason(fp16, devices::h200()).find("fp16 inputs"), std::string::npos);
  fp16.step = true;
  EXPECT_TRUE(plan_linear(fp16, devices::h200()).ok);  // the step's state is fp32
  EXPECT_NE(reason(problem(true, 512), devices::h200()).find("up to 256"), std::string::npos);
}

TEST(LinearPlan, PackedSequences) {
  LinearProblem pb = problem(false, 64, 64, 230);
  pb.batch = 1;
  pb.n_seqs = 4, pb.n_chunks = 5;
  for (int pass = 0; pass < 4; ++pass) {
    pb.backward = pass % 2, pb.per_channel = pass / 2;
    const LaunchPlan p = plan_linear(pb, devices::h200());
    ASSERT_TRUE(p.ok) << p.reason;
    EXPECT_EQ(p.linear.n_seqs, 4);
    EXPECT_EQ(p.linear.n_chunks, 5);
    EXPECT_EQ(p.steps.front().grid.z, 4u);  // the state passes: a sequence per z
    EXPECT_EQ(p.steps.back().grid.x, 5u);   // the per-chunk pass: every sequence's chunks
    EXPECT_EQ(p.steps.back().grid.z, 1u);
  }
  pb.batch = 2;
  EXPECT_NE(plan_linear(pb, devices::h200()).reason.find("batch of 1"), std::string::npos);
}

TEST(LinearPlan, NoTokensNoLaunches) {
  const LaunchPlan p = plan_linear(problem(false, 64, 64, 0), devices::h200());
  ASSERT_TRUE(p.ok);
  EXPECT_TRUE(p.steps.empty());
}

}  // namespace
}  // namespace ae::plan
