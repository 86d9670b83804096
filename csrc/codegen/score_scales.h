// A score_mod's constant factors at its two ends: score_mod(s) = out * f(in * s), e.g.
// softcap's cap * tanh(s / cap). Kernels fold them into multiplies they do anyway: `in` into
// the softmax scale (s * (scale * in), one multiply per score instead of two) and `out` into
// the log2(e) of exp2's FFMA, so a softcap costs what FlashAttention's does (one multiply
// and one tanh per score over plain softmax).
#pragma once

#include "ir/variant.h"

namespace ae::codegen {

struct ScoreScales {
  double in = 1, out = 1;
  // The node computing score * in (forward and backward graphs; -1: `in` is 1): the generated
  // code takes it as its `score` argument.
  int in_fwd = -1, in_bw = -1;
  int out_inner = -1;  // forward: the node whose value times `out` is the score (-1: out is 1)
};

// Factors are taken where they are exact to fold: `in` only when every use of the score (in
// both graphs) is that one multiply, `out` only under softmax and when positive (it scales
// the row maximum).
ScoreScales find_score_scales(const ir::Variant& v);

}  // namespace ae::codegen
