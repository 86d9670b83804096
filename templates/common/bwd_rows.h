// The backward's two passes around its main kernel: memory-bound, a group of lanes per
// query row (16-byte accesses), the same for every variant (compiled once per dtype).
//   bwd_prep: delta = rowsum(dO * O) - dlse and the LSE in the log2 domain (+inf on rows
//             with nothing kept, so that each of their P is exactly 0), for softmax; and the
//             row's dQ accumulator zeroed (and the deterministic backward's dQ tile
//             counters, common/dq_order.h). In torch ops this was ~10 kernels moving ~6x the
//             bytes (fp32 copies of dO and O): ~5% of fwd+bwd at 4k tokens.
//   bwd_dq:   dQ = scale * dq_accum in the input dtype (the main kernel adds dS K unscaled).
#pragma once

#include "common/ae_common.h"
#include "common/numeric.h"
#include "common/params.h"

namespace ae {

namespace rowpass {

// Eight 16-bit floats (one 16-byte load) as fp32.
template <bool kBf16>
AE_DEVICE void unpack8(const uint4& v, float (&f)[8]) {
  const u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) unpack2<kBf16>(w[i], f[2 * i], f[2 * i + 1]);
}

// This thread's row: rows go to groups of p.lanes lanes (a power of two, at most 32) in
// launch order; sub is the thread's lane in its group. Split into (batch, head, row); false
// past the end (packed sequences: past the batch's own rows).
AE_DEVICE bool row_of(const BwdRowParams& p, int& b, int& h, int& r, int& sub) {
  const long long row = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) / p.lanes;
  sub = static_cast<int>(threadIdx.x) % p.lanes;
  if (row >= static_cast<long long>(p.batch) * p.heads * p.q_len) return false;
  r = static_cast<int>(row % p.q_len);
  const int bh = static_cast<int>(row / p.q_len);
  b = bh / p.heads, h = bh % p.heads;
  return !p.cu_q || r < p.cu_q[b + 1] - p.cu_q[b];
}

// Row r of (b, h) of dout, o or dq (strides in elements for batch, head, row).
template <class T>
AE_DEVICE T* row_at(const BwdRowParams& p, T* base, const long long (&stride)[3], int b, int h,
                    int r) {
  if (p.cu_q) return base + h * stride[1] + static_cast<long long>(p.cu_q[b] + r) * stride[2];
  return base + b * stride[0] + h * stride[1] + r * stride[2];
}

// The row's entry in the statistics (lse, dlse, delta, lse2).
AE_DEVICE long long stat_at(const BwdRowParams& p, int b, int h, int r) {
  if (p.cu_q) return static_cast<long long>(h) * p.q_total + p.cu_q[b] + r;
  return (static_cast<long long>(b) * p.heads + h) * p.q_len + r;
}

// The sum over a row's group of lanes (every lane of the warp takes part).
AE_DEVICE float group_sum(float x, int lanes) {
  for (int o = lanes / 2; o > 0; o >>= 1) x += shfl_xor(x, o);
  return x;
}

// Where column c of row r of (b, h) accumulates (BwdRowParams::acc_tiled); groups of 8
// columns from a multiple of 8 are contiguous either way.
AE_DEVICE float* acc_at(const BwdRowParams& p, int b, int h, int r, int c) {
  float* head = p.dq_accum + (static_cast<long long>(b) * p.heads + h) * p.acc_rows * p.acc_cols;
  if (!p.acc_tiled) return head + static_cast<long long>(r) * p.acc_cols + c;
  const long long tile = static_cast<long long>(r / 64) * (p.acc_cols / 64) + c / 64;
  return head + tile * 4096 + (r % 64) * 64 + ((c % 64) ^ (8 * (r % 8)));
}

}  // namespace rowpass

// p.lanes: lanes per row, for d_v / 8 chunks of 16 bytes (row_pass_lanes, common/shapes.h).
template <bool kBf16>
AE_DEVICE void bwd_prep(const BwdRowParams& p) {
  int b, h, r, sub;
  const bool live = rowpass::row_of(p, b, h, r, sub);
  if (p.delta) {
    float dot = 0.f;
    if (live) {
      const u16* go = rowpass::row_at(p, static_cast<const u16*>(p.o), p.o_stride, b, h, r);
      const u16* gdo = rowpass::row_at(p, static_cast<const u16*>(p.dout), p.do_stride, b, h, r);
      for (int c = sub * 8; c < p.d_v; c += p.lanes * 8) {
        float o[8], d[8];
        rowpass::unpack8<kBf16>(*reinterpret_cast<const uint4*>(go + c), o);
        rowpass::unpack8<kBf16>(*reinterpret_cast<const uint4*>(gdo + c), d);
#pragma unroll
        for (int i = 0; i < 8; ++i) dot = fmaf(o[i], d[i], dot);
      }
    }
    dot = rowpass::group_sum(dot, p.lanes);  // whole warps shuffle, rows past the end too
    if (live && sub == 0) {
      const long long bhr = rowpass::stat_at(p, b, h, r);
      p.delta[bhr] = p.dlse ? dot - p.dlse[bhr] : dot;
      const float l = p.lse[bhr];
      p.lse2[bhr] = l == neg_inf() ? -neg_inf() : l * kLog2e;
    }
  }
  if (!live) return;
  const int tile = p.order_rows > 0 ? p.order_rows : 64;
  if (p.dq_order && r % tile == 0 && sub == 0)
    p.dq_order[(static_cast<long long>(b) * p.heads + h) * ((p.q_len + tile - 1) / tile) + r / tile] = 0;
  for (int c = sub; c < p.acc_cols / 4; c += p.lanes)
    *reinterpret_cast<float4*>(rowpass::acc_at(p, b, h, r, 4 * c)) = make_float4(0.f, 0.f, 0.f, 0.f);
}

// A custom normalization's row terms, after bwd_prep, one thread per row, from the saved
// statistic, dot = rowsum(dO * O) (bwd_prep's delta + dlse) and dlse; the Variant computes
// them (custom_rows) from the traced finish and adds the gradients of captured tensors finish
// reads. Log domain (norm::CustomLog): the softmax backward's P = exp2(u log2e - lse2) and
// dS = P (dP - delta) give the exact gradient with lse2 = -h(lse) log2e and delta =
// -(h'(lse) dot + dlse) exp(-h - lse). Linear (norm::CustomLinear): lse2 = c(L) and delta =
// c'(L) dot / c + dL.
template <class Variant>
AE_DEVICE void bwd_rows_custom(const BwdRowParams& p, const Variant& var) {
  const long long row = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= static_cast<long long>(p.batch) * p.heads * p.q_len) return;
  const int r = static_cast<int>(row % p.q_len);
  const int bh = static_cast<int>(row / p.q_len);
  const float dlse = p.dlse ? p.dlse[row] : 0.f;
  var.custom_rows(p.lse[row], p.delta[row] + dlse, dlse, bh / p.heads, bh % p.heads, r,
                  p.lse2[row], p.delta[row]);  // p.lse: the saved statistic (L, or lse)
}

// p.lanes: lanes per row, for d_qk / 8 chunks of 8 fp32 values (row_pass_lanes).
template <bool kBf16>
AE_DEVICE void bwd_dq(const BwdRowParams& p) {
  int b, h, r, sub;
  if (!rowpass::row_of(p, b, h, r, sub)) return;
  u16* gdq = rowpass::row_at(p, static_cast<u16*>(p.dq), p.dq_stride, b, h, r);
  const float s = p.scale;
  for (int c = sub; c < p.d_qk / 8; c += p.lanes) {
    const float4* acc = reinterpret_cast<const float4*>(rowpass::acc_at(p, b, h, r, 8 * c));
    const float4 x = acc[0], y = acc[1];
    uint4 out;
    out.x = pack2<kBf16>(x.x * s, x.y * s);
    out.y = pack2<kBf16>(x.z * s, x.w * s);
    out.z = pack2<kBf16>(y.x * s, y.y * s);
    out.w = pack2<kBf16>(y.z * s, y.w * s);
    *reinterpret_cast<uint4*>(gdq + 8 * c) = out;
  }
}

}  // namespace ae
