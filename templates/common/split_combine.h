// The split-KV forward's second step: merges the kv_splits partial outputs of each query row
// (AttnParams::o_part / lse_part, written by the forward's epilogue, nvidia/mma_rows.h) into
// O and the LSE. Softmax: O = sum_s exp(lse_s - lse) O_s with lse = log sum_s exp(lse_s); a
// range with nothing kept has lse_s = -inf and weighs 0, a row with nothing kept anywhere
// gets O = 0 and lse = -inf, as without a split. normalize="none": O = sum_s O_s, lse = 0.
// One warp per row, kCombineThreads per CTA; the grid covers batch x q_heads x q_len rows.
#pragma once

#include "common/ae_common.h"
#include "common/kv_layout.h"
#include "common/numeric.h"
#include "common/params.h"
#include "common/shapes.h"

namespace ae {

// The merge's arithmetic, shared with the decode template's merge of its warps (sm80/decode.h).
// The LSE of a row from its parts': mx their max, sum the sum of exp(lse_s - mx); -inf when
// nothing is kept in any part.
AE_DEVICE float merged_lse(float mx, float sum) { return sum > 0.f ? mx + __logf(sum) : neg_inf(); }
// The weight of part s's O in the merged row: exp(lse_s - lse) under softmax (0 where nothing
// is kept: its O is not read), 1 for normalize="none" (the parts add).
AE_DEVICE float part_weight(bool row_stats, float lse_s, float lse) {
  return !row_stats ? 1.f : lse == neg_inf() ? 0.f : __expf(lse_s - lse);
}

template <bool kBf16, class Layout>
AE_DEVICE void fwd_combine(const AttnParams& p) {
  const long long rows = static_cast<long long>(p.batch) * p.q_heads * p.q_len;
  const long long r = static_cast<long long>(blockIdx.x) * (kCombineThreads / kWarpSize) +
                      threadIdx.x / kWarpSize;
  if (r >= rows) return;  // whole warps leave together
  const int lane = threadIdx.x % kWarpSize;
  const int row = static_cast<int>(r % p.q_len);
  const int h = static_cast<int>(r / p.q_len % p.q_heads), b = static_cast<int>(r / p.q_len / p.q_heads);
  if (row >= Layout::q_len(p, b)) return;  // (packed sequences: past b's queries)
  const float* lse_s = p.lse_part + r;  // split s at lse_s[s * rows]
  float lse = 0.f;
  if (p.row_stats) {
    float mx = neg_inf();
    for (int s = lane; s < p.kv_splits; s += kWarpSize) mx = fmaxf(mx, lse_s[s * rows]);
    for (int o = kWarpSize / 2; o > 0; o /= 2) mx = fmaxf(mx, shfl_xor(mx, o));
    float sum = 0.f;
    if (mx != neg_inf())
      for (int s = lane; s < p.kv_splits; s += kWarpSize) sum += __expf(lse_s[s * rows] - mx);
    for (int o = kWarpSize / 2; o > 0; o /= 2) sum += shfl_xor(sum, o);
    lse = merged_lse(mx, sum);
  }
  u16* out = Layout::q_row(p, static_cast<u16*>(p.o), p.o_stride, b, h, row);
  for (int c = 2 * lane; c < p.d_v; c += 2 * kWarpSize) {
    float x = 0.f, y = 0.f;
    for (int s = 0; s < p.kv_splits; ++s) {
      const float w = part_weight(p.row_stats, lse_s[s * rows], lse);
      if (w == 0.f) continue;  // a range with nothing kept: its O is not read
      const float2 v = *reinterpret_cast<const float2*>(p.o_part + (s * rows + r) * p.d_v + c);
      x = fmaf(w, v.x, x);
      y = fmaf(w, v.y, y);
    }
    *reinterpret_cast<u32*>(out + c) = pack2<kBf16>(x, y);
  }
  if (lane == 0) p.lse[Layout::stat(p, b, h, row)] = lse;
}

}  // namespace ae
