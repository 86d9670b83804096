// Row normalizations: how a row's scores x_j (after the score_mod) become the weights P_j of
// P V, and what the forward returns per row. The generated Variant names its policy
// (`using Norm = ae::norm::Softmax;`) and kernels call its members; no kernel body asks which
// normalization it runs. The per-row reductions that go with kRowStats (the running max and
// sum over a row's lanes) belong to the family's row code (nvidia/mma_rows.h for the mma
// layouts), which calls the members below.
//
// A policy has:
//   kRowStats        the rows keep a running max m and sum l (online), the forward writes the
//                    LSE and the backward reads it (as lse2) and delta = rowsum(dO * O) - dlse
//   kRawScores       without a score_mod, scores may stay unscaled until weight(), which
//                    applies the scale in its FFMA
//   kModFactor       weight()'s factor for a score_mod's output (times the mod's constant
//                    outer factor, Variant::kOutScale)
//   identity_scale   the factor for scores of variants without a score_mod
//   kMaskedNegInf    a masked or out-of-bounds score is -inf (it vanishes under exp), else 0
//                    (it vanishes as a weight); a constant, not a function returning the
//                    value: behind a call, ptxas put the score_mod under a branch per score
//                    (bench/RESULTS.md)
//   rescale / weight / finish   the forward's online steps (kRowStats only)
//   backward         P and dL/dx of one score in the backward
//   kLinearRows      without kRowStats: score_transform notes which rows keep a key (in
//                    RowStats::m), and with kSumWeights normalize_step sums the weights into
//                    RowStats::l
//   kCustomFinish    store_rows asks the Variant (finish_row) for O's factor and the row
//                    statistic: a custom row normalization's traced finish function
// Custom row normalizations (ir::Normalize::Custom) are CustomLog and CustomLinear below,
// with the traced weight as the Variant's score and its stat and finish as members.
#pragma once

#include "common/numeric.h"
#include "common/params.h"

namespace ae::norm {

// P_j = exp(x_j - m) / sum_k exp(x_k - m), in the log2 domain (exp2 on the MUFU unit).
struct Softmax {
  static constexpr bool kRowStats = true;
  static constexpr bool kLinearRows = false;
  static constexpr bool kSumWeights = false;  // (kRowStats sums them)
  static constexpr bool kCustomFinish = false;
  static constexpr bool kRawScores = true;
  static constexpr float kModFactor = kLog2e;
  static constexpr bool kMaskedNegInf = true;
  AE_DEVICE static float identity_scale(const AttnParams& p) { return p.scale_log2; }

  // A new tile whose largest score (times `scale`) is tile_max: the new running max in m,
  // the factor that rescales what was accumulated so far (alpha), and in m_use the value
  // weight() subtracts (0 while nothing is kept, so that -inf - -inf never happens).
  AE_DEVICE static float rescale(float& m, float tile_max, float& m_use) {
    const float m_new = fmaxf(m, tile_max);
    m_use = m_new == neg_inf() ? 0.f : m_new;
    const float alpha = fast_exp2(m - m_use);
    m = m_new;
    return alpha;
  }
  AE_DEVICE static float weight(float x, float scale, float m_use) {
    return fast_exp2(fmaf(x, scale, -m_use));
  }
  // The row's total sum l: O's factor and the natural-log LSE (-inf: nothing kept).
  AE_DEVICE static void finish(float m, float l, float& out_scale, float& lse) {
    out_scale = l > 0.f ? 1.f / l : 0.f;
    lse = l > 0.f ? (m + __log2f(l)) * kLn2 : neg_inf();
  }
  // x: the score times `factor` is its log2-domain value; lse2 and delta: the row's.
  AE_DEVICE static void backward(float x, float factor, bool keep, float lse2, float dp,
                                 float delta, float& prob, float& dx) {
    prob = keep ? fast_exp2(x * factor - lse2) : 0.f;
    // A masked key's dP = dO.V is inf or nan where V is: its dx stays 0, not 0 * inf.
    dx = prob != 0.f ? prob * (dp - delta) : 0.f;
  }
  // The same for an unchecked raw score s (no score_mod, kept): one FFMA and one MUFU.
  AE_DEVICE static void backward_raw(const AttnParams& p, float s, float lse2, float dp,
                                     float delta, float& prob, float& dx) {
    prob = fast_exp2(s * p.scale_log2 - lse2);
    dx = prob * (dp - delta);
  }
};

// P_j = x_j: no row statistic (sigmoid or ReLU attention, O = sum_j f(s_j) v_j).
struct None {
  static constexpr bool kRowStats = false;
  static constexpr bool kLinearRows = false;
  static constexpr bool kSumWeights = false;
  static constexpr bool kCustomFinish = false;
  static constexpr bool kRawScores = false;
  static constexpr float kModFactor = 1.f;
  static constexpr bool kMaskedNegInf = false;
  AE_DEVICE static float identity_scale(const AttnParams& p) { return p.scale; }
  AE_DEVICE static float rescale(float&, float, float& m_use) {
    m_use = 0.f;
    return 1.f;
  }
  AE_DEVICE static float weight(float x, float, float) { return x; }
  AE_DEVICE static void finish(float, float, float& out_scale, float& lse) {
    out_scale = 1.f;
    lse = 0.f;
  }
  AE_DEVICE static void backward(float x, float, bool keep, float, float dp, float,
                                 float& prob, float& dx) {
    prob = keep ? x : 0.f;
    dx = keep ? dp : 0.f;
  }
  AE_DEVICE static void backward_raw(const AttnParams& p, float s, float, float dp, float,
                                     float& prob, float& dx) {
    prob = s * p.scale;
    dx = dp;
  }
};

// A custom normalization in the log domain: softmax's online steps over the log-weights u
// (the Variant's score is weight(score_mod(s))); the Variant's finish_row then turns the row's
// lse into O's factor exp(m + h(lse)). The backward is softmax's, with the row terms of
// bwd_rows_custom (common/bwd_rows.h) in place of the LSE and delta.
struct CustomLog : Softmax {  // (raw scores too: finish_row reads m and l as softmax keeps them)
  static constexpr bool kCustomFinish = true;
};

// A linear custom normalization: P is the weight f (the Variant's score), the row statistic L
// the sum of the weights (kSum) or of the Variant's stat (score_transform sums it: the
// Variant's kStat), and the Variant's finish_row gives O's factor c(L). score_transform notes
// whether a row keeps any key (RowStats::m stays -inf until it does), so that a row with
// nothing kept gives 0 whatever c(0) is. In the backward (after bwd_rows_custom) lse2 holds
// the row's c and delta its term rho = c'(L) dO.A + dL by the statistic: dL/df = c dP, plus rho
// when the weights are the statistic (kSum); a separate stat's share (rho dg/dx) is the
// Variant's grad_stat.
template <bool kSum>
struct CustomLinear : None {
  static constexpr bool kLinearRows = true;
  static constexpr bool kSumWeights = kSum;
  static constexpr bool kCustomFinish = true;
  AE_DEVICE static void backward(float x, float, bool keep, float c, float dp, float rho,
                                 float& prob, float& dx) {
    prob = keep ? x * c : 0.f;  // (c may be inf in a row that keeps nothing)
    dx = keep ? fmaf(c, dp, kSum ? rho : 0.f) : 0.f;
  }
  AE_DEVICE static void backward_raw(const AttnParams& p, float s, float c, float dp, float rho,
                                     float& prob, float& dx) {
    prob = s * p.scale * c;
    dx = fmaf(c, dp, kSum ? rho : 0.f);
  }
};

}  // namespace ae::norm
