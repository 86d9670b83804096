#include "plan/linear_plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "common/shapes.h"
#include "sm80/shapes.h"

namespace ae::plan {
namespace {

LaunchPlan refuse(std::string reason) {
  LaunchPlan p;
  p.reason = std::move(reason);
  return p;
}

unsigned u(int64_t x) { return static_cast<unsigned>(x); }

}  // namespace

int64_t linear_chunk_tokens() { return sm80::kLinChunk; }
int64_t linear_chunks(int64_t t_len) { return (t_len + sm80::kLinChunk - 1) / sm80::kLinChunk; }

LaunchPlan plan_linear(const LinearProblem& pb, const DeviceCaps& dev) {
  if (pb.dtype != ElemType::BFloat16 && pb.dtype != ElemType::Float16)
    return refuse(fmt::format("{} inputs have no fused linear attention kernel (bf16 and fp16 do)",
                              elem_name(pb.dtype)));
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  if (pb.t_len > kMax || pb.batch * pb.heads > 65535 || pb.n_seqs > 65535 ||
      pb.d_k * pb.d_v * std::max(pb.n_chunks, linear_chunks(pb.t_len)) > kMax)
    return refuse("the shape is past the linear kernels' 32-bit indices or grid");
  LaunchPlan plan;
  LinearParams& a = plan.linear;
  a.batch = static_cast<int>(pb.batch);
  a.heads = static_cast<int>(pb.heads);
  a.t_len = static_cast<int>(pb.t_len);
  a.d_k = static_cast<int>(pb.d_k);
  a.d_v = static_cast<int>(pb.d_v);
  a.per_channel = pb.per_channel;
  a.scale = static_cast<float>(pb.scale);
  plan::Step s;
  s.spec.family = codegen::Family::Common;
  s.spec.arch = dev.arch();
  s.spec.bf16 = pb.dtype == ElemType::BFloat16;
  s.spec.d_qk = static_cast<int>(pb.d_k);
  s.spec.d_v = static_cast<int>(pb.d_v);
  if (pb.step) {  // portable: a thread per state column
    if (pb.d_k < 1 || pb.d_k > 256 || pb.d_v < 1)
      return refuse(fmt::format("the decode step's kernel takes d_k up to 256, not {}", pb.d_k));
    s.spec.kind = codegen::Kind::LinearStep;
    s.spec.warps = kLinearStepCols / 32;
    s.threads = kLinearStepCols;
    s.grid = {u((pb.d_v + kLinearStepCols - 1) / kLinearStepCols), u(pb.heads), u(pb.batch)};
    plan.ok = true;
    plan.family = "common";
    if (pb.batch * pb.heads > 0) plan.steps.push_back(s);
    return plan;
  }
  if (dev.vendor != jit::Vendor::kNvidia || dev.major < 8)
    return refuse(fmt::format("{}: the chunked linear attention kernels are mma.sync's (NVIDIA, "
                              "sm_80 and up)", dev.label()));
  // The chunks' states are stored in the inputs' dtype: fp16's range (65504) is too small for
  // a state that decays slowly (it grows with the tokens), bf16's is fp32's.
  if (pb.dtype != ElemType::BFloat16)
    return refuse("fp16 inputs: the chunked kernels keep chunk states in the inputs' dtype, "
                  "whose range fp16 lacks (bf16 runs them; the decode step takes fp16)");
  auto fits = [](int64_t d) { return d == 64 || d == 128; };
  if (!fits(pb.d_k) || !fits(pb.d_v))
    return refuse(fmt::format("head dims ({}, {}): the chunked kernels take 64 or 128", pb.d_k,
                              pb.d_v));
  const int smem = pb.backward ? sm80::linear_grads_smem_bytes(a.d_k, a.d_v, pb.per_channel)
                               : sm80::linear_out_smem_bytes(a.d_k, a.d_v, pb.per_channel);
  if (smem > dev.smem_per_block)
    return refuse(fmt::format("the {} needs {} bytes of shared memory, the device allows {}",
                              pb.backward ? "gradients' pass" : "output pass", smem,
                              dev.smem_per_block));
  const bool packed = pb.n_seqs > 0;
  if (packed && pb.batch != 1) return refuse("packed sequences take a batch of 1");
  a.n_chunks = static_cast<int>(packed ? pb.n_chunks : linear_chunks(pb.t_len));
  a.n_seqs = static_cast<int>(pb.n_seqs);
  plan.ok = true;
  plan.family = "sm80";
  if (pb.batch * pb.heads == 0 || pb.t_len == 0) return plan;  // (the caller fills the outputs)
  const int64_t seqs = packed ? pb.n_seqs : pb.batch;  // the state passes' grid z
  // 32 value columns per CTA for scalar decays where 64-column tiles leave SMs idle: twice the
  // CTAs, and half the tensor-core work on each one's path from chunk to chunk (H100,
  // bench/RESULTS.md: retention's state pass at 16k tokens, B 1, H 16, 64 tiles of 64 columns:
  // 245 us at 32 against 280; at 4k, B 4, 256 such tiles: 144 us at 32 against 113). Per key
  // channel 64: each CTA scans its 64 channels' decays, which halving the columns would do
  // twice (3-6% slower measured).
  const int64_t tiles64 = (pb.d_k / sm80::kLinTile) * (pb.d_v / sm80::kLinTile) * pb.heads * seqs;
  const int asked = pb.state_cols == 32 || pb.state_cols == 64 ? static_cast<int>(pb.state_cols) : 0;
  const bool half = !pb.per_channel && tiles64 < dev.multiprocessors;
  const int cols = asked ? asked : half ? sm80::kLinTile / 2 : sm80::kLinTile;
  s.spec.family = codegen::Family::Sm80;
  s.spec.per_channel = pb.per_channel;
  s.spec.warps = sm80::kLinThreads / 32;
  s.threads = sm80::kLinThreads;
  s.spec.kind = codegen::Kind::LinearState;
  s.spec.block_n = cols;
  s.smem = sm80::linear_state_smem_bytes(pb.per_channel, cols);
  if (s.smem > dev.smem_per_block)
    return refuse(fmt::format("the state pass needs {} bytes of shared memory, the device allows {}",
                              s.smem, dev.smem_per_block));
  s.grid = {u((pb.d_k / sm80::kLinTile) * (pb.d_v / cols)), u(pb.heads), u(seqs)};
  plan.steps.push_back(s);
  if (pb.backward) {  // the reverse pass, over the same tiles
    s.spec.kind = codegen::Kind::LinearDState;
    plan.steps.push_back(s);
  }
  s.spec.kind = pb.backward ? codegen::Kind::LinearGrads : codegen::Kind::LinearOut;
  s.spec.block_n = 0;  // (its tiles are whole chunks)
  s.smem = smem;
  // GLA's gradients' pass spills at ptxas's default register-usage level with D_k 128 and
  // fits at 0 (compile-all), where the runtime's fallback would land after a second compile.
  if (pb.backward && pb.per_channel) s.spec.reg_level = 0;
  s.grid = {u(a.n_chunks), u(pb.heads), u(pb.batch)};  // (packed: a chunk per x, of any sequence)
  plan.steps.push_back(s);
  return plan;
}

}  // namespace ae::plan
