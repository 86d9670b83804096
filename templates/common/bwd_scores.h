// The backward's work on one score, shared by every backward template (any fragment layout):
// the score q.k of query q_idx and key `key` becomes P (recomputed from the row statistic),
// and dP becomes dS = dL/dx * d score_mod / d score (Variant::grad, which also adds the
// gradients of captured tensors). lse2 and delta are the query row's.
#pragma once

#include "common/kv_layout.h"
#include "common/normalizers.h"
#include "common/params.h"

namespace ae {

// kCheck && check: the tile needs the bounds and the mask; !kCheck: a copy without them, for
// tiles that need no check (plain softmax then costs one FFMA and one MUFU per score).
// kSplit: the mask from the query's and the key's terms the caller loaded (mr, mc: Variant::
// mask_rc, codegen/mask_split.h), not from loads per score.
template <bool kCheck, class Layout, class Variant, bool kSplit = false>
AE_DEVICE void score_backward(const AttnParams& p, const Variant& var, float& s_io, float& dp_io,
                              float lse2, float delta, int b, int hq, int q_idx, int key,
                              bool check, const typename Variant::MaskRow& mr = {},
                              const typename Variant::MaskCol& mc = {}) {
  using Norm = typename Variant::Norm;
  bool keep = true;
  if (kCheck && check) {
    keep = q_idx < Layout::q_len(p, b) && key < Layout::kv_len(p, b);
    if constexpr (kSplit && Variant::kMaskSplit)
      keep = keep && var.mask_rc(mr, mc, b, hq, q_idx, key);
    else if constexpr (Variant::kHasMask)
      keep = keep && var.mask(b, hq, q_idx, key);
  }
  float prob, dx, s = 0.f;
  if constexpr (Variant::kFusedStatGrads) {
    // A custom linear normalization with a score_mod and no captured tensor's gradient: its
    // weight and the derivatives of the weight and the stat from one function, whose shared
    // work (a decay's pow) is done once per score instead of once in each.
    s = s_io * (p.scale * Variant::kInScale);
    float x, dw, dg;
    var.score_grads(s, b, hq, q_idx, key, x, dw, dg);
    Norm::backward(x, Norm::kModFactor * Variant::kOutScale, keep, lse2, dp_io, delta, prob, dx);
    float ds = dx == 0.f ? 0.f : dx * dw;
    if (keep && delta != 0.f) ds = fmaf(delta, dg, ds);
    s_io = prob;
    dp_io = ds;
  } else {
    if constexpr (Variant::kStat) s = s_io * (p.scale * Variant::kInScale);  // grad_stat's
    if constexpr (!kCheck && Variant::kIdentity) {
      Norm::backward_raw(p, s_io, lse2, dp_io, delta, prob, dx);
    } else {
      // The score times the score_mod's constant inner factor (generated code takes it so),
      // and its outer one folded into the policy's factor (codegen/score_scales.h).
      s = s_io * (p.scale * Variant::kInScale);
      const float x = Variant::kIdentity ? s : var.score(s, b, hq, q_idx, key);
      Norm::backward(x, Norm::kModFactor * Variant::kOutScale, keep, lse2, dp_io, delta, prob,
                     dx);
    }
    float ds = dx;
    if constexpr (!Variant::kIdentity) ds = dx == 0.f ? 0.f : var.grad(s, b, hq, q_idx, key, dx);
    // A custom linear normalization's stat: its share rho * dg/dx (delta holds the row's rho).
    if constexpr (Variant::kStat)
      if (keep && delta != 0.f) ds += var.grad_stat(s, b, hq, q_idx, key, delta);
    s_io = prob;
    dp_io = ds;
  }
}

}  // namespace ae
