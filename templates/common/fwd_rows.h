// The per-row work of every forward template, on S and O tiles held in the mma.sync C
// layout (which wgmma's accumulators share): 16 rows per warp, each thread holding rows
// lane/4 and lane/4 + 8, columns 8 j + 2 (lane % 4) + {0, 1} of n8 tile j.
//   score_transform: the Variant's score_mod and mask, bounds, into the log2 domain
//   softmax_step:    running max / sum update, P = exp2(S - m), O's rescale factor
//   p_to_a:          P converted in registers to the A operand of P V
//   store_rows:      O normalized and written, plus the natural-log LSE
#pragma once

#include "common/params.h"
#include "common/sm80_ops.h"

namespace ae::rows {

using sm80::fast_exp2;
using sm80::kLn2;
using sm80::kLog2e;
using sm80::neg_inf;
using sm80::shfl_xor;

// The block-state row of one query block: which key blocks a forward visits (empty ones are
// skipped) and which need the mask (partial ones).
struct BlockRow {
  const unsigned char* state;  // null: no mask, every block full
  int n;                       // key blocks
  // masked: the Variant's kHasMask. Without a mask the host passes no table, and saying so at
  // compile time folds the walk away (and frees its registers).
  AE_DEVICE BlockRow(const AttnParams& p, int b, int h, int m_block, bool masked)
      : state(masked && p.block_state ? p.block_state + b * p.state_stride_b + h * p.state_stride_h +
                                  static_cast<long long>(m_block) * p.n_kv_blocks
                            : nullptr),
        n(p.n_kv_blocks) {}
  // The first block at or after j with something kept (n when none).
  AE_DEVICE int next(int j) const {
    while (state && j < n && state[j] == 0) ++j;
    return j;
  }
  AE_DEVICE bool partial(int j) const { return state && state[j] == 1; }
};

// Score mod, mask and bounds for one 16-row tile whose thread rows start at row0 (this
// thread's first row), columns at col0 (this thread's first column). Results are the scores
// that softmax_step multiplies by softmax_scale() (softmax), or P itself (normalize = none).
// kRaw: plain softmax scores on tiles without checks are left as they are, for softmax_step
// to scale inside its exp2 (one FFMA per score instead of an FMUL and an FADD).
template <bool kCheck, bool kRaw = false, class Variant, int kN8>
AE_DEVICE void score_transform(const AttnParams& p, const Variant& var, float (&s)[kN8][4],
                               int b, int h, int row0, int col0) {
  if constexpr (kRaw && !kCheck && Variant::kIdentity && Variant::kSoftmax) return;
#pragma unroll
  for (int nt = 0; nt < kN8; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int q_idx = row0 + 8 * (e >> 1), kv_idx = col0 + nt * 8 + (e & 1);
      float x;
      if constexpr (Variant::kIdentity) {
        x = Variant::kSoftmax ? s[nt][e] * p.scale_log2 : s[nt][e] * p.scale;
      } else {
        // Variant::kOutScale and log2(e): softmax_scale
        x = var.score(s[nt][e] * (p.scale * Variant::kInScale), b, h, q_idx, kv_idx);
      }
      if constexpr (kCheck) {
        bool keep = q_idx < p.q_len && kv_idx < p.kv_len;
        if constexpr (Variant::kHasMask) keep = keep && var.mask(b, h, q_idx, kv_idx);
        if (!keep) x = Variant::kSoftmax ? neg_inf() : 0.f;
      }
      s[nt][e] = x;
    }
  }
}

// The factor softmax_step applies to score_transform's scores (positive): the softmax scale
// times log2(e) for raw plain scores (raw: kRaw without checks), 1 for plain scores scaled
// already, and log2(e) times the score_mod's constant outer factor for its output: the FFMA
// in front of exp2 applies it instead of multiplies per score.
template <class Variant>
AE_DEVICE float softmax_scale(const AttnParams& p, bool raw) {
  return !Variant::kIdentity ? kLog2e * Variant::kOutScale : raw ? p.scale_log2 : 1.f;
}

// One online-softmax step for a 16-row tile: s becomes P (unnormalized), and alpha the
// factor by which this thread's two rows of O must be rescaled before P V is added.
// m_run / l_run: this thread's two rows (l_run is the thread's partial sum; the quad's
// partial sums are added in store_rows). The log2-domain score is s * scale: scale is 1
// after score_transform, or scale * log2(e) for raw scores (it must then be > 0, so that the
// row max of s is the max of s * scale).
template <int kN8>
AE_DEVICE void softmax_step(float (&s)[kN8][4], float (&m_run)[2], float (&l_run)[2],
                            float (&alpha)[2], float scale = 1.f) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float mx = neg_inf();
#pragma unroll
    for (int nt = 0; nt < kN8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
    mx = fmaxf(mx, shfl_xor(mx, 1));
    mx = fmaxf(mx, shfl_xor(mx, 2));
    const float m_new = fmaxf(m_run[r], mx * scale);
    const float m_use = m_new == neg_inf() ? 0.f : m_new;  // nothing kept yet
    alpha[r] = fast_exp2(m_run[r] - m_use);
    m_run[r] = m_new;
    float sum = 0.f;
#pragma unroll
    for (int nt = 0; nt < kN8; ++nt) {
      s[nt][2 * r] = fast_exp2(fmaf(s[nt][2 * r], scale, -m_use));
      s[nt][2 * r + 1] = fast_exp2(fmaf(s[nt][2 * r + 1], scale, -m_use));
      sum += s[nt][2 * r] + s[nt][2 * r + 1];
    }
    l_run[r] = l_run[r] * alpha[r] + sum;
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
// a 32-key tile's whole softmax) is skipped.
template <int kO8>
AE_DEVICE void rescale_rows_if_moved(float (&o)[kO8][4], const float (&alpha)[2]) {
  if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) rescale_rows(o, alpha);
}

// softmax_step with O rescaled at once (when P V follows directly).
template <int kN8, int kO8>
AE_DEVICE void online_softmax(float (&s)[kN8][4], float (&o)[kO8][4], float (&m_run)[2],
                              float (&l_run)[2], float scale = 1.f) {
  float alpha[2];
  softmax_step(s, m_run, l_run, alpha, scale);
  rescale_rows_if_moved(o, alpha);
}

// P (fp32, the C layout) as the A operand of the next MMA (mma.sync m16n8k16 or wgmma
// m64nNk16, same per-warp layout): two n8 tiles of S per 16-wide k step.
template <bool kBf16, int kN8>
AE_DEVICE void p_to_a(u32 (&a)[kN8 / 2][4], const float (&s)[kN8][4]) {
#pragma unroll
  for (int kk = 0; kk < kN8 / 2; ++kk) {
    a[kk][0] = sm80::pack2<kBf16>(s[2 * kk][0], s[2 * kk][1]);
    a[kk][1] = sm80::pack2<kBf16>(s[2 * kk][2], s[2 * kk][3]);
    a[kk][2] = sm80::pack2<kBf16>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    a[kk][3] = sm80::pack2<kBf16>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
  }
}

// Epilogue of a 16-row tile: normalize, write O (bf16/fp16) and the natural-log LSE for this
// thread's rows row0 and row0 + 8 (rows past q_len are skipped).
template <bool kBf16, bool kSoftmax, int kO8>
AE_DEVICE void store_rows(const AttnParams& p, const float (&o)[kO8][4], const float (&m_run)[2],
                          const float (&l_run)[2], int b, int h, int row0) {
  const int lane = threadIdx.x % 32;
  u16* go = static_cast<u16*>(p.o) + b * p.o_stride[0] + h * p.o_stride[1];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + 8 * r;
    float scale_o = 1.f, lse = 0.f;
    if constexpr (kSoftmax) {
      float l = l_run[r];
      l += shfl_xor(l, 1);
      l += shfl_xor(l, 2);
      scale_o = l > 0.f ? 1.f / l : 0.f;
      lse = l > 0.f ? (m_run[r] + __log2f(l)) * kLn2 : neg_inf();
    }
    if (row < p.q_len) {
#pragma unroll
      for (int i = 0; i < kO8; ++i) {
        const int col = i * 8 + 2 * (lane % 4);
        *reinterpret_cast<u32*>(go + row * p.o_stride[2] + col) =
            sm80::pack2<kBf16>(o[i][2 * r] * scale_o, o[i][2 * r + 1] * scale_o);
      }
      if (lane % 4 == 0) p.lse[(static_cast<long long>(b) * p.q_heads + h) * p.q_len + row] = lse;
    }
  }
}

}  // namespace ae::rows
