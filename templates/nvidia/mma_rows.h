// The per-row work of the NVIDIA forward templates, on S and O tiles held in the mma.sync C
// layout (which wgmma's accumulators share): 16 rows per warp, each thread holding rows
// lane/4 and lane/4 + 8, columns 8 j + 2 (lane % 4) + {0, 1} of n8 tile j. The row
// normalization is the Variant's policy (common/normalizers.h); this file reduces over the
// four lanes of a row for it.
//   score_transform: the Variant's score_mod and mask, bounds, the normalization's domain
//   normalize_step:  the policy's online step (running max and sum, P, O's rescale factor)
//   p_to_a:          P converted in registers to the A operand of P V
//   store_rows:      O normalized and written, plus the row statistic (LSE)
#pragma once

#include "common/block_max_layout.h"
#include "common/block_walk.h"
#include "common/kv_layout.h"
#include "common/normalizers.h"
#include "common/params.h"
#include "common/tile_scheduler.h"
#include "nvidia/mma.h"

namespace ae::rows {

// A thread's two rows of a 16-row tile: the normalization's running max and sum.
struct RowStats {
  float m[2], l[2];
  AE_DEVICE void init() {
    m[0] = m[1] = neg_inf();
    l[0] = l[1] = 0.f;
  }
};

// Score mod, mask and bounds (the lengths of (b, h)'s rows, from the layout) for one 16-row
// tile whose thread rows start at row0 (this thread's first row), columns at col0 (this
// thread's first column). Results are the scores
// that normalize_step multiplies by weight_scale() (or P itself when the policy keeps no
// row statistics). kRaw: scores of variants without a score_mod on tiles without checks are
// left as they are when the policy allows (Norm::kRawScores), for normalize_step to scale
// inside its exp2 (one FFMA per score instead of an FMUL and an FADD).
// A custom normalization's stat function (Variant::kStat) is summed into st->l here, over the
// kept scores.
// How a mask's loads (Variant::kMaskSplit; codegen/mask_split.h) are made on checked tiles:
// per score (the mask as written), the row terms once per row and the column terms per
// score, or both once (columns per n8 tile). Fewer loads take registers for their values:
// each template picks what it has the registers for (the compile-all check).
enum class MaskLoads { kPerScore, kByRow, kByRowAndColumn };
// Both where the mask has one column term, by row past that: a document mask with a second
// column term (doc[b, k] and kept[k]) spilled the sm90 forward by row and column (56 bytes,
// 40 at register level 0).
template <class Variant>
constexpr MaskLoads rows_and_one_column() {
  return Variant::kMaskColTerms <= 1 ? MaskLoads::kByRowAndColumn : MaskLoads::kByRow;
}
// A template's pick, unless the kernel was built with AE_MASK_LOADS (an A/B switch).
#ifdef AE_MASK_LOADS
#define AE_MASK_LOADS_OR(pick) static_cast<ae::rows::MaskLoads>(AE_MASK_LOADS)
#else
#define AE_MASK_LOADS_OR(pick) (pick)
#endif

template <bool kCheck, bool kRaw, class Layout, class Variant, int kN8,
          MaskLoads kMaskLoads = MaskLoads::kPerScore>
AE_DEVICE void score_transform(const AttnParams& p, const Variant& var, float (&s)[kN8][4],
                               int b, int h, int row0, int col0, RowStats* st = nullptr) {
  constexpr bool kRows = kCheck && Variant::kMaskSplit && kMaskLoads != MaskLoads::kPerScore;
  constexpr bool kCols = kRows && kMaskLoads == MaskLoads::kByRowAndColumn;
  using Norm = typename Variant::Norm;
  if constexpr (kRaw && !kCheck && Variant::kIdentity && Norm::kRawScores) {
    return;  // raw scores: normalize_step scales them
  } else {   // (not a return before the loop: NVRTC warns that the loop is unreachable)
    // The mask's loads by row and by column (Variant::mask_rc; codegen/mask_split.h): the
    // thread's 2 rows once, its 2 columns per n8 tile, not 2 loads per score. Their indices
    // may be out of bounds (a tile's tail): the loads clamp them, and keep drops the score.
    typename Variant::MaskRow mrow[2];
    if constexpr (kRows) {
      mrow[0] = var.mask_row(b, h, row0);
      mrow[1] = var.mask_row(b, h, row0 + 8);
    }
#pragma unroll
    for (int nt = 0; nt < kN8; ++nt) {
      typename Variant::MaskCol mcol[2];
      if constexpr (kCols) {
        int c = col0 + nt * 8;
        asm volatile("" : "+r"(c));
        mcol[0] = var.mask_col(b, h, c);
        mcol[1] = var.mask_col(b, h, c + 1);
      }
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int q_idx = row0 + 8 * (e >> 1), kv_idx = col0 + nt * 8 + (e & 1);
        float x, stat = 0.f;
        const float in = s[nt][e] * (p.scale * Variant::kInScale);
        if constexpr (Variant::kIdentity) {
          x = s[nt][e] * Norm::identity_scale(p);
          if constexpr (Variant::kStat) stat = var.stat_term(in, b, h, q_idx, kv_idx);
        } else if constexpr (Variant::kStat) {
          x = var.score_stat(in, b, h, q_idx, kv_idx, stat);
        } else {
          // Variant::kOutScale and the policy's factor: weight_scale
          x = var.score(in, b, h, q_idx, kv_idx);
        }
        bool keep = true;
        if constexpr (kCheck) {
          // (Packed sequences: rows past a sequence's queries are never stored, and reading its
          // length here spilled the sm80 forward.)
          keep = (Layout::kVarlen || q_idx < Layout::q_len(p, b)) && kv_idx < Layout::kv_len(p, b);
          if constexpr (kCols)
            keep = keep && var.mask_rc(mrow[e >> 1], mcol[e & 1], b, h, q_idx, kv_idx);
          else if constexpr (kRows)
            keep = keep && var.mask_rc(mrow[e >> 1], var.mask_col(b, h, kv_idx), b, h, q_idx,
                                       kv_idx);
          else if constexpr (Variant::kHasMask)
            keep = keep && var.mask(b, h, q_idx, kv_idx);
          if (!keep) x = Norm::kMaskedNegInf ? neg_inf() : 0.f;
        }
        if constexpr (Variant::kStat)
          if (keep) st->l[e >> 1] += stat;
        if constexpr (Norm::kLinearRows)  // the row keeps a key (RowStats::m: -inf until then)
          if (keep) st->m[e >> 1] = 0.f;
        s[nt][e] = x;
      }
    }
  }
}

// The factor normalize_step applies to score_transform's scores (positive): the scale for raw
// plain scores (raw: kRaw without checks), 1 for plain scores scaled already, and the policy's
// factor times the score_mod's constant outer factor for its output: the FFMA in front of
// exp2 applies it instead of multiplies per score.
template <class Variant>
AE_DEVICE float weight_scale(const AttnParams& p, bool raw) {
  using Norm = typename Variant::Norm;
  return !Variant::kIdentity ? Norm::kModFactor * Variant::kOutScale
                             : raw ? Norm::identity_scale(p) : 1.f;
}

// The gate-training forward's keys per pooled block (KernelSpec::pool_block; 0: an ordinary
// forward).
#ifndef AE_POOL_BLOCK
#define AE_POOL_BLOCK 0
#endif

// The gate-training forward: for this thread's two rows, the largest of the tile's scores in
// each block of kPool keys, in the normalization's domain (s * scale: what normalize_step's
// running max compares), stored to p.block_max (common/block_max_layout.h) by the row's first
// lane. kPool divides the tile's keys, or is a multiple of them: then the tiles of a block fold
// into it by a max (the host filled it with -inf). kv0: the tile's first key (a multiple of
// its width).
// Softmax only (the planner's rule): block max minus the log2 LSE is then the block's largest
// probability.
template <int kPool, int kN8>
AE_DEVICE void store_block_max(const AttnParams& p, const float (&s)[kN8][4], float scale, int b,
                               int h, int row0, int kv0) {
  constexpr int kKeys = 8 * kN8;
  static_assert(kPool % 8 == 0 && (kKeys % kPool == 0 || kPool % kKeys == 0), "pool blocks");
  constexpr int kPer = kPool < kKeys ? kPool / 8 : kN8;  // n8 tiles per block in this tile
  const bool lead = threadIdx.x % 4 == 0;
  const long long bh = static_cast<long long>(b) * p.q_heads + h;
#pragma unroll
  for (int blk = 0; blk < kN8 / kPer; ++blk) {
    // (A tile past the keys' end covers blocks past the last, which do not exist.)
    const int kb = kv0 / kPool + blk;
    if (kb >= p.n_pool_blocks) break;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = neg_inf();
#pragma unroll
      for (int nt = blk * kPer; nt < (blk + 1) * kPer; ++nt)
        mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
      mx = fmaxf(mx, shfl_xor(mx, 1));
      mx = fmaxf(mx, shfl_xor(mx, 2));
      const int row = row0 + 8 * r;
      if (lead && row < p.q_len) {
        const float v = mx * scale;
        float* at = p.block_max + block_max_index(p, bh, row, kb, kPool);
        *at = kPool > kKeys ? fmaxf(*at, v) : v;
      }
    }
  }
}

// One online step of the row normalization for a 16-row tile: s becomes P (unnormalized),
// and alpha the factor by which this thread's two rows of O must be rescaled before P V is
// added. st.l is the thread's partial sum (the quad's partial sums are added in store_rows).
// The score in the policy's domain is s * scale: scale is 1 after score_transform, or the
// identity scale for raw scores (it must then be > 0, so that the row max of s is the max
// of s * scale). A policy without row statistics leaves s as it is.
template <class Norm, int kN8>
AE_DEVICE void normalize_step(float (&s)[kN8][4], RowStats& st, float (&alpha)[2],
                              float scale = 1.f) {
  if constexpr (!Norm::kRowStats) {
    alpha[0] = alpha[1] = 1.f;
    if constexpr (Norm::kSumWeights) {  // custom linear: L sums the weights
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < kN8; ++nt) sum += s[nt][2 * r] + s[nt][2 * r + 1];
        st.l[r] += sum;
      }
    }
  } else {  // (not a return above: the loop would be "unreachable" to nvcc)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = neg_inf();
#pragma unroll
      for (int nt = 0; nt < kN8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
      mx = fmaxf(mx, shfl_xor(mx, 1));
      mx = fmaxf(mx, shfl_xor(mx, 2));
      float m_use;
      alpha[r] = Norm::rescale(st.m[r], mx * scale, m_use);
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < kN8; ++nt) {
        s[nt][2 * r] = Norm::weight(s[nt][2 * r], scale, m_use);
        s[nt][2 * r + 1] = Norm::weight(s[nt][2 * r + 1], scale, m_use);
        sum += s[nt][2 * r] + s[nt][2 * r + 1];
      }
      st.l[r] = st.l[r] * alpha[r] + sum;
    }
  }
}

template <int kO8>
AE_DEVICE void rescale_rows(float (&o)[kO8][4], const float (&alpha)[2]) {
#pragma unroll
  for (int i = 0; i < kO8; ++i) {
    o[i][0] *= alpha[0];
    o[i][1] *= alpha[0];
    o[i][2] *= alpha[1];
    o[i][3] *= alpha[1];
  }
}

// rescale_rows where it changes something: once the row maxima settle, most tiles leave
// every alpha of the warp at exactly 1, and the rescale (one FMUL per O element, as many as
// a 32-key tile's whole softmax) is skipped; never under a policy without row statistics.
template <class Norm, int kO8>
AE_DEVICE void rescale_rows_if_moved(float (&o)[kO8][4], const float (&alpha)[2]) {
  if constexpr (Norm::kRowStats)
    if (any_lane(alpha[0] != 1.f || alpha[1] != 1.f)) rescale_rows(o, alpha);
}

// normalize_step with O rescaled at once (when P V follows directly).
template <class Norm, int kN8, int kO8>
AE_DEVICE void normalize(float (&s)[kN8][4], float (&o)[kO8][4], RowStats& st,
                         float scale = 1.f) {
  float alpha[2];
  normalize_step<Norm>(s, st, alpha, scale);
  rescale_rows_if_moved<Norm>(o, alpha);
}

// P (fp32, the C layout) as the A operand of the next MMA (mma.sync m16n8k16 or wgmma
// m64nNk16, same per-warp layout): two n8 tiles of S per 16-wide k step.
template <bool kBf16, int kN8>
AE_DEVICE void p_to_a(u32 (&a)[kN8 / 2][4], const float (&s)[kN8][4]) {
#pragma unroll
  for (int kk = 0; kk < kN8 / 2; ++kk) {
    a[kk][0] = pack2<kBf16>(s[2 * kk][0], s[2 * kk][1]);
    a[kk][1] = pack2<kBf16>(s[2 * kk][2], s[2 * kk][3]);
    a[kk][2] = pack2<kBf16>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    a[kk][3] = pack2<kBf16>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
  }
}

// Epilogue of a 16-row tile: normalize, write O (bf16/fp16) and the row statistic (the
// natural-log LSE) for this thread's rows row0 and row0 + 8 (rows past q_len are skipped, and
// with kPadded, columns past p.d_v, which a kernel built for a padded head dim computes as
// zeros);
// kernels built for a split-KV launch write the range's partial O (fp32) and LSE instead.
// A custom normalization's Variant gives O's factor and the statistic (finish_row).
template <bool kBf16, class Norm, class Layout, bool kSplitKv = false, bool kPadded = false,
          class Variant, int kO8>
AE_DEVICE void store_rows(const AttnParams& p, const Variant& var, const float (&o)[kO8][4],
                          const RowStats& st, int b, int h, int row0) {
  static_assert(!(kSplitKv && Norm::kCustomFinish), "split-KV merges softmax rows only");
  const int lane = threadIdx.x % 32;
  u16* go = Layout::q_row(p, static_cast<u16*>(p.o), p.o_stride, b, h, 0);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + 8 * r;
    float l = st.l[r];
    float m = st.m[r];
    if constexpr (Norm::kRowStats || Norm::kLinearRows) {
      l += shfl_xor(l, 1);
      l += shfl_xor(l, 2);
    }
    if constexpr (Norm::kLinearRows) {  // kept-key flags: 0 in the lanes that saw one
      m = fmaxf(m, shfl_xor(m, 1));
      m = fmaxf(m, shfl_xor(m, 2));
    }
    float scale_o, lse;
    Norm::finish(m, l, scale_o, lse);
    if constexpr (Norm::kCustomFinish) var.finish_row(m, l, b, h, row, scale_o, lse);
    if constexpr (kSplitKv) {  // split-KV: this range's O (fp32) and LSE, for the combine
      if (row < Layout::q_len(p, b)) {
        const long long at = (static_cast<long long>(kv_split_of_cta(p)) * p.batch + b) * p.q_heads + h;
        float* po = p.o_part + (at * p.q_len + row) * p.d_v;
#pragma unroll
        for (int i = 0; i < kO8; ++i)
          if (!kPadded || i * 8 < p.d_v)  // (d_v is a multiple of 8)
            *reinterpret_cast<float2*>(po + i * 8 + 2 * (lane % 4)) =
                make_float2(o[i][2 * r] * scale_o, o[i][2 * r + 1] * scale_o);
        if (lane % 4 == 0) p.lse_part[at * p.q_len + row] = lse;
      }
      continue;
    }
    if (row < Layout::q_len(p, b)) {
#pragma unroll
      for (int i = 0; i < kO8; ++i) {
        const int col = i * 8 + 2 * (lane % 4);
        if (!kPadded || i * 8 < p.d_v)
          *reinterpret_cast<u32*>(go + row * p.o_stride[2] + col) =
              pack2<kBf16>(o[i][2 * r] * scale_o, o[i][2 * r + 1] * scale_o);
      }
      if (lane % 4 == 0) p.lse[Layout::stat(p, b, h, row)] = lse;
    }
  }
}

}  // namespace ae::rows
