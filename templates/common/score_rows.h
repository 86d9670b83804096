// One score of a forward tile, whatever the family's register layout: the Variant's score_mod
// (or the identity's scale), a custom normalization's stat term, the mask and the bounds; and
// the factor the normalization's online step applies to the results. The gfx90a rows
// (gfx90a/rows.h) call these per score; nvidia/mma_rows.h spells the same steps inline.
#pragma once

#include "common/normalizers.h"
#include "common/params.h"

namespace ae::rows {

// The score of (q_idx, kv_idx) from the raw q.k product s, in the domain the normalization's
// step reads (times score_factor's factor). kCheck: the tile may hold masked or
// out-of-bounds scores; a dropped one becomes the policy's neutral value (-inf under softmax,
// 0 else) and keep is false. stat: the Variant's stat term (custom linear normalizations),
// meaningful where keep is true.
template <bool kCheck, class Layout, class Variant>
AE_DEVICE float transform_score(const AttnParams& p, const Variant& var, float s, int b, int h,
                                int q_idx, int kv_idx, float& stat, bool& keep) {
  using Norm = typename Variant::Norm;
  float x;
  stat = 0.f;
  const float in = s * (p.scale * Variant::kInScale);
  if constexpr (Variant::kIdentity) {
    x = s * Norm::identity_scale(p);
    if constexpr (Variant::kStat) stat = var.stat_term(in, b, h, q_idx, kv_idx);
  } else if constexpr (Variant::kStat) {
    x = var.score_stat(in, b, h, q_idx, kv_idx, stat);
  } else {
    x = var.score(in, b, h, q_idx, kv_idx);
  }
  keep = true;
  if constexpr (kCheck) {
    keep = q_idx < Layout::q_len(p, b) && kv_idx < Layout::kv_len(p, b);
    if constexpr (Variant::kHasMask) keep = keep && var.mask(b, h, q_idx, kv_idx);
    if (!keep) x = Norm::kMaskedNegInf ? neg_inf() : 0.f;
  }
  return x;
}

// Whether a tile's scores may stay raw (q.k unscaled) for the online step to scale inside its
// exp2: plain variants on tiles without checks, when the policy allows and the scale is
// positive (so that the row max of s is the max of s * scale).
template <class Variant>
AE_DEVICE bool raw_scores(const AttnParams& p, bool check) {
  using Norm = typename Variant::Norm;
  return Variant::kIdentity && Norm::kRawScores && !check && Norm::identity_scale(p) > 0.f;
}

// The factor the online step applies to transform_score's results (or to raw scores): the
// identity's scale for raw ones, 1 for plain scores scaled already, and the policy's factor
// times the score_mod's constant outer factor for a score_mod's output.
template <class Variant>
AE_DEVICE float score_factor(const AttnParams& p, bool raw) {
  using Norm = typename Variant::Norm;
  return !Variant::kIdentity ? Norm::kModFactor * Variant::kOutScale
                             : raw ? Norm::identity_scale(p) : 1.f;
}

}  // namespace ae::rows
