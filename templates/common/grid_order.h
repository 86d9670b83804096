// Which (block, head, batch) a CTA takes. The host launches (blocks, heads, batch); CTAs are
// dispatched in linear order as SMs free up. Heads are taken in groups of p.head_group, and
// within a group heads fastest: block 0 of each head of the group before any block 1. Under a
// causal mask, where the caller makes block 0 the heaviest, the heaviest CTAs go first and
// the last to finish are light ones. The host sizes the group so that its heads' K and V stay
// in L2 (cuda_backend.cpp's head_group). The forwards use it; the backward, at the register
// edge, keeps blockIdx as it comes.
#pragma once

#include "common/ae_common.h"
#include "common/params.h"

namespace ae {

struct GridPos {
  int block, head, batch;
};

AE_DEVICE GridPos heads_fastest(const AttnParams& p) {
  const unsigned n = gridDim.x, heads = gridDim.y, g = p.head_group < 1 ? 1 : p.head_group;
  const unsigned r = blockIdx.x + n * blockIdx.y;  // within this batch (blockIdx.z)
  const unsigned first = r / (g * n) * g;          // the group's first head
  const unsigned size = heads - first < g ? heads - first : g;  // the last may be smaller
  const unsigned i = r - first * n;
  return {static_cast<int>(i / size), static_cast<int>(first + i % size),
          static_cast<int>(blockIdx.z)};
}

}  // namespace ae
