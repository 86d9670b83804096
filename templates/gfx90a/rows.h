// The per-row work of the gfx90a forward on S^T and O^T held as MFMA C tiles (gfx90a/mfma.h):
// a lane holds one query row (its column j) and, of every tile, the keys (or head-dim values)
// of its lane group g, so a row's reductions are over the G groups of lanes with the same j.
//   score_transform: the Variant's score_mod and mask, bounds (common/score_rows.h)
//   normalize_step:  the normalization's online step; P and O's rescale factor
//   store_rows:      O normalized and written, plus the row statistic
#pragma once

#include "common/kv_layout.h"
#include "common/normalizers.h"
#include "common/score_rows.h"
#include "common/tile_scheduler.h"
#include "gfx90a/mfma.h"

namespace ae::gfx90a {

// A lane's row: the normalization's running max and its partial sum (over the lane's keys;
// the groups' partial sums are added in store_rows).
struct RowStats {
  float m, l;
  AE_DEVICE void init() {
    m = neg_inf();
    l = 0.f;
  }
};

// The max (or sum) of x over the lane groups of a row.
template <int N>
AE_DEVICE float group_max(float x) {
#pragma unroll
  for (int s = N; s < 64; s *= 2) x = fmaxf(x, shfl_xor(x, s));
  return x;
}
template <int N>
AE_DEVICE float group_sum(float x) {
#pragma unroll
  for (int s = N; s < 64; s *= 2) x += shfl_xor(x, s);
  return x;
}

// The tiles' scores (raw q.k) of query row q_idx, keys from kv0 (tile t's value v is key
// kv0 + N t + c_row(v, g)), through the Variant; kRaw leaves plain scores raw (score_factor
// scales them in the step). A custom normalization's stat terms go into st.l; a linear one
// notes in st.m that the row keeps a key.
template <bool kCheck, bool kRaw, int N, class Layout, class Variant, int kTiles, class Acc>
AE_DEVICE void score_transform(const AttnParams& p, const Variant& var, Acc (&s)[kTiles], int b,
                               int h, int q_idx, int kv0, int g, RowStats& st) {
  using Norm = typename Variant::Norm;
  if constexpr (!(kRaw && !kCheck)) {
#pragma unroll
    for (int t = 0; t < kTiles; ++t) {
#pragma unroll
      for (int v = 0; v < Mfma<N>::kC; ++v) {
        float stat;
        bool keep;
        s[t][v] = rows::transform_score<kCheck, Layout>(p, var, s[t][v], b, h, q_idx,
                                                        kv0 + N * t + c_row<N>(v, g), stat, keep);
        if constexpr (Variant::kStat)
          if (keep) st.l += stat;
        if constexpr (Norm::kLinearRows)
          if (keep) st.m = 0.f;
      }
    }
  }
}

// One online step: s becomes P (unnormalized, times `factor` in the policy's domain) and the
// return value is the factor O's row must be scaled by before P V is added.
template <class Norm, int N, int kTiles, class Acc>
AE_DEVICE float normalize_step(Acc (&s)[kTiles], RowStats& st, float factor) {
  if constexpr (!Norm::kRowStats) {
    if constexpr (Norm::kSumWeights) {
#pragma unroll
      for (int t = 0; t < kTiles; ++t)
#pragma unroll
        for (int v = 0; v < Mfma<N>::kC; ++v) st.l += s[t][v];
    }
    return 1.f;
  } else {
    float mx = neg_inf();
#pragma unroll
    for (int t = 0; t < kTiles; ++t)
#pragma unroll
      for (int v = 0; v < Mfma<N>::kC; ++v) mx = fmaxf(mx, s[t][v]);
    mx = group_max<N>(mx);
    float m_use;
    const float alpha = Norm::rescale(st.m, mx * factor, m_use);
    float sum = 0.f;
#pragma unroll
    for (int t = 0; t < kTiles; ++t)
#pragma unroll
      for (int v = 0; v < Mfma<N>::kC; ++v) {
        s[t][v] = Norm::weight(s[t][v], factor, m_use);
        sum += s[t][v];
      }
    st.l = st.l * alpha + sum;
    return alpha;
  }
}

// Epilogue: O^T tiles (tile dt's value v is head-dim column N dt + c_row(v, g) of the lane's
// row) normalized and written as 16-bit values with the row statistic; a split-KV build
// writes its range's fp32 O and LSE instead. Rows past q_len are skipped.
template <bool kBf16, class Norm, class Layout, bool kSplitKv, int N, class Variant, int kTiles,
          class Acc>
AE_DEVICE void store_rows(const AttnParams& p, const Variant& var, const Acc (&o)[kTiles],
                          const RowStats& st, int b, int h, int row, int g) {
  static_assert(!(kSplitKv && Norm::kCustomFinish), "split-KV merges softmax rows only");
  float l = st.l, m = st.m;
  if constexpr (Norm::kRowStats || Norm::kLinearRows) l = group_sum<N>(l);
  if constexpr (Norm::kLinearRows) m = group_max<N>(m);  // 0 where any group kept a key
  float scale_o, lse;
  Norm::finish(m, l, scale_o, lse);
  if constexpr (Norm::kCustomFinish) var.finish_row(m, l, b, h, row, scale_o, lse);
  if (row >= Layout::q_len(p, b)) return;
  if constexpr (kSplitKv) {
    const long long at =
        (static_cast<long long>(kv_split_of_cta(p)) * p.batch + b) * p.q_heads + h;
    float* po = p.o_part + (at * p.q_len + row) * p.d_v;
#pragma unroll
    for (int dt = 0; dt < kTiles; ++dt)
#pragma unroll
      for (int v = 0; v < Mfma<N>::kC; v += 4)
        *reinterpret_cast<float4*>(po + N * dt + c_row<N>(v, g)) =
            make_float4(o[dt][v] * scale_o, o[dt][v + 1] * scale_o, o[dt][v + 2] * scale_o,
                        o[dt][v + 3] * scale_o);
    if (g == 0) p.lse_part[at * p.q_len + row] = lse;
  } else {
    u16* go = Layout::q_row(p, static_cast<u16*>(p.o), p.o_stride, b, h, row);
#pragma unroll
    for (int dt = 0; dt < kTiles; ++dt)
#pragma unroll
      for (int v = 0; v < Mfma<N>::kC; v += 4)
        *reinterpret_cast<u64*>(go + N * dt + c_row<N>(v, g)) =
            pack4<kBf16>(o[dt][v] * scale_o, o[dt][v + 1] * scale_o, o[dt][v + 2] * scale_o,
                         o[dt][v + 3] * scale_o);
    if (g == 0) p.lse[Layout::stat(p, b, h, row)] = lse;
  }
}

}  // namespace ae::gfx90a
