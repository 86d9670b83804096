// Which work tile a CTA takes: the tile scheduler. The host launches the grid the planner
// gives (csrc/plan); CTAs are dispatched in linear order as SMs free up, or (PersistentTiles)
// each CTA of a one-wave grid loops over tiles.
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
  // The tile of block (x, y) of a grid of nx x ny blocks, of batch z (blockIdx's roles).
  AE_DEVICE static WorkTile at(const AttnParams& p, unsigned x, unsigned y, unsigned z, unsigned nx,
                               unsigned ny) {
    const unsigned g = p.head_group < 1 ? 1 : p.head_group;
    const unsigned r = x + nx * y;                // within this batch (z)
    const unsigned first = r / (g * nx) * g;      // the group's first head
    const unsigned size = ny - first < g ? ny - first : g;  // the last may be smaller
    const unsigned i = r - first * nx;
    const int block = p.n_q_blocks - 1 - static_cast<int>(i / size), head = static_cast<int>(first + i % size);
    if constexpr (kSplitKv)
      return {block, head, static_cast<int>(z) / p.kv_splits, kv_split_of_cta(p)};
    else
      return {block, head, static_cast<int>(z), 0};
  }
  AE_DEVICE static WorkTile tile(const AttnParams& p) {
    return at(p, blockIdx.x, blockIdx.y, blockIdx.z, gridDim.x, gridDim.y);
  }
};

// Persistent forward (no split-KV): a one-wave grid (a CTA per SM) takes the tiles of the
// grid (query blocks, query heads, batch) in HeadsFastest's order, tile t being that grid's
// linear block t. A CTA's first tile is blockIdx.x; each next one is the next number of
// p.tile_counter (zeroed per call) past gridDim.x, drawn by the kernel when it is nearly free
// (sm90/fwd.h: once a tile's loads are issued): a causal row's cost varies with its block
// 100-fold, and a static split would leave SMs idle.
struct PersistentTiles {
  AE_DEVICE static int count(const AttnParams& p) { return p.n_q_blocks * p.q_heads * p.batch; }
  AE_DEVICE static int first() { return static_cast<int>(blockIdx.x); }
  AE_DEVICE static int next(const AttnParams& p) {
    return atomicAdd(p.tile_counter, 1) + static_cast<int>(gridDim.x);
  }
  AE_DEVICE static WorkTile at(const AttnParams& p, int t) {
    const unsigned nx = p.n_q_blocks, ny = p.q_heads, u = static_cast<unsigned>(t);
    return HeadsFastest<false>::at(p, u % nx, u / nx % ny, u / (nx * ny), nx, ny);
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
