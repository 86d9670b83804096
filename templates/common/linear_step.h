// Linear attention's decode step (common/params.h LinearParams, t_len 1): for each (batch,
// head) the state S [d_k, d_v] (fp32, in place) becomes diag(exp(a)) S + k v^T and the output
// is o = scale * q^T S (the new state). Memory-bound: the state is read and written once. A
// thread per state column (coalesced rows), kLinearStepCols columns per CTA, q, k and the
// decays of the row in shared memory; grid (ceil(d_v / kLinearStepCols), heads, batch).
// Scalar or per-channel (one per key row) decays. Portable (NVIDIA, AMD).
#pragma once

#include "common/ae_common.h"
#include "common/numeric.h"
#include "common/params.h"
#include "common/shapes.h"

namespace ae {

template <bool kBf16, int kMaxDk>
AE_DEVICE void linear_step(const LinearParams& p) {
  __shared__ float s_q[kMaxDk], s_k[kMaxDk], s_e[kMaxDk];
  const int b = blockIdx.z, h = blockIdx.y;
  const int c = blockIdx.x * kLinearStepCols + threadIdx.x;
  const u16* q = static_cast<const u16*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1];
  const u16* k = static_cast<const u16*>(p.k) + b * p.k_stride[0] + h * p.k_stride[1];
  const long long bh = static_cast<long long>(b) * p.heads + h;
  for (int r = threadIdx.x; r < p.d_k; r += kLinearStepCols) {
    s_q[r] = to_float<kBf16>(q[r]);
    s_k[r] = to_float<kBf16>(k[r]);
    // (exp of -inf: 0, a gate that forgets everything)
    s_e[r] = __expf(p.a[p.per_channel ? bh * p.d_k + r : bh]);
  }
  __syncthreads();
  if (c >= p.d_v) return;
  const float v = to_float<kBf16>(static_cast<const u16*>(p.v)[b * p.v_stride[0] + h * p.v_stride[1] + c]);
  float* state = p.state + bh * p.d_k * p.d_v + c;
  float acc = 0.f;
  auto update = [&](int r, float old) {
    const float s = fmaf(s_e[r], old, s_k[r] * v);
    state[static_cast<long long>(r) * p.d_v] = s;
    acc = fmaf(s_q[r], s, acc);
  };
  // kBatch rows' loads issued before their stores: the compiler cannot move a load past a
  // store to the same array, so one row at a time paid a round trip each (834 GB/s on H100).
  constexpr int kBatch = 16;
  int r0 = 0;
  for (; r0 + kBatch <= p.d_k; r0 += kBatch) {
    float x[kBatch];
#pragma unroll
    for (int i = 0; i < kBatch; ++i) x[i] = state[static_cast<long long>(r0 + i) * p.d_v];
#pragma unroll
    for (int i = 0; i < kBatch; ++i) update(r0 + i, x[i]);
  }
  for (; r0 < p.d_k; ++r0) update(r0, state[static_cast<long long>(r0) * p.d_v]);
  static_cast<u16*>(p.o)[b * p.o_stride[0] + h * p.o_stride[1] + c] = to_half<kBf16>(acc * p.scale);
}

}  // namespace ae
