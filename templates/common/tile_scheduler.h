// Which work tile a CTA takes: the tile scheduler. The host launches the grid the planner
// gives (csrc/plan); CTAs are dispatched in linear order as SMs free up. Split-KV and
// persistent scheduling (the Hopper-backward issue) add schedulers here.
#pragma once

#include "common/ae_common.h"
#include "common/params.h"

namespace ae {

struct WorkTile {
  int block, head, batch;
  int split;  // the split-KV forward's key range (0 without a split)
};

// The split-KV range of this CTA under HeadsFastest (re-read from the grid where it is needed,
// e.g. in the epilogue, rather than held in a register across the main loop).
AE_DEVICE int kv_split_of_cta(const AttnParams& p) {
  return p.kv_splits > 1 ? static_cast<int>(blockIdx.z) % p.kv_splits : 0;
}

// Forward: the grid is (query blocks, query heads, batch x kv_splits). Heads are taken in groups of
// p.head_group, and within a group heads fastest: block 0 of each head of the group before any
// block 1; blocks from the last (under a causal mask, where later query blocks see more keys,
// the heaviest CTAs go first and the last to finish are light ones). The host sizes the group
// so that its heads' K and V stay in L2 (the planner's head_group).
// kSplitKv: the kernel was built for a split-KV launch (else the grid's z is the batch alone).
template <bool kSplitKv>
struct HeadsFastest {
  AE_DEVICE static WorkTile tile(const AttnParams& p) {
    const unsigned n = gridDim.x, heads = gridDim.y, g = p.head_group < 1 ? 1 : p.head_group;
    const unsigned r = blockIdx.x + n * blockIdx.y;  // within this batch (blockIdx.z)
    const unsigned first = r / (g * n) * g;          // the group's first head
    const unsigned size = heads - first < g ? heads - first : g;  // the last may be smaller
    const unsigned i = r - first * n;
    const int block = p.n_q_blocks - 1 - static_cast<int>(i / size), head = static_cast<int>(first + i % size);
    if constexpr (kSplitKv)
      return {block, head, static_cast<int>(blockIdx.z) / p.kv_splits, kv_split_of_cta(p)};
    else
      return {block, head, static_cast<int>(blockIdx.z), 0};
  }
};

// The grid as it comes: (blocks, heads, batch) = blockIdx. The sm80 backward (key blocks,
// KV heads, batch) uses it: the head groups' index math costs registers it does not have.
struct GridOrder {
  AE_DEVICE static WorkTile tile(const AttnParams&) {
    return {static_cast<int>(blockIdx.x), static_cast<int>(blockIdx.y), static_cast<int>(blockIdx.z),
            0};
  }
};

// The same with the blocks from the last: the deterministic backward's launch order
// (common/dq_order.h).
struct ReversedBlocks {
  AE_DEVICE static WorkTile tile(const AttnParams&) {
    return {static_cast<int>(gridDim.x - 1 - blockIdx.x), static_cast<int>(blockIdx.y),
            static_cast<int>(blockIdx.z), 0};
  }
};

}  // namespace ae
