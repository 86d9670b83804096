// Which tiles of the score matrix a kernel visits, and which of them need the mask: the block
// walk, shared by the forwards (the key blocks of one query block) and the backwards (the
// query blocks of one key block). It reads the block-state table (common/block_state.h: a code
// per tile of the mask); block masks given as data (the block-sparsity issue) become another
// source behind the same two walks.
#pragma once

#include "common/numeric.h"
#include "common/params.h"

namespace ae {

// Block-state codes: a table entry's bits 0-1 are the tile's code. Where the table was built
// with halves (BlockStateParams::half_m; bit 6 set), bits 2-3 and 4-5 are the codes of the
// tile's first and second half_m query rows alone: the sm90 forward's two consumer warpgroups
// each take their own (a full half skips the mask; a half with nothing kept, without the
// overlap, skips the block: no GEMM). With half_n instead, the halves are the tile's first
// half_n keys and the rest: the sm90 backward's two MMA warpgroups' keys (a full half skips
// the mask, an empty one its GEMMs and scores).
enum : unsigned char { kBlockEmpty = 0, kBlockPartial = 1, kBlockFull = 2, kBlockHalves = 0x40 };

AE_DEVICE int tile_code(unsigned char s) { return s & 3; }
// The code of half i (0 or 1) of a tile whose entry is s: its own where s has halves, else
// the tile's.
AE_DEVICE int half_code(unsigned char s, int i) {
  return (s & kBlockHalves) ? (s >> (2 + 2 * i)) & 3 : s & 3;
}

// Forward: the key blocks of query block m_block of (b, h) (of one split-KV range), in order,
// from next(first). Under a mask, next(j) reads the codes of blocks j .. j + kWarpSize - 1 in
// one load, a lane each, and takes the first kept one from their ballot: a dense row costs
// one load per block as a serial scan would, a sparse one (a document mask's at 16k keeps a
// few of 128 blocks) one per kWarpSize empty blocks, where a serial scan cost as much as the
// GEMMs. The walk holds no state besides its bounds (registers are what the forwards lack).
// Every lane of the warp must call next() with the same j.
struct RowWalk {
  const unsigned char* state;  // null: no mask, every block full
  int first, n;                // the key blocks first .. n - 1 (a split-KV range, or all)
  // masked: the Variant's kHasMask. Without a mask the host passes no table, and saying so at
  // compile time folds the walk away (and frees its registers). split_kv (also known at compile
  // time): walk range `split` of a split-KV launch.
  // kv_blocks: the key blocks batch b has (the layout's kv_blocks; -1: p.n_kv_blocks).
  AE_DEVICE RowWalk(const AttnParams& p, int b, int h, int m_block, bool masked, bool split_kv = false,
                    int split = 0, int kv_blocks = -1)
      : state(masked && p.block_state ? p.block_state + b * p.state_stride_b + h * p.state_stride_h +
                                            static_cast<long long>(m_block) * p.n_kv_blocks
                                      : nullptr),
        first(split_kv ? split * p.kv_split_blocks : 0),
        n(min(kv_blocks < 0 ? p.n_kv_blocks : kv_blocks,
              split_kv ? first + p.kv_split_blocks : p.n_kv_blocks)) {}
  // The first block at or after j with something kept (n when none).
  AE_DEVICE int next(int j) const {
    if (!state) return j;
    for (; j < n; j += kWarpSize) {
      const int m = j + static_cast<int>(threadIdx.x % kWarpSize);
      const LaneMask kept = ballot(m < n && tile_code(state[m]) != kBlockEmpty);
      if (kept != 0) return j + first_lane(kept) - 1;
    }
    return n;
  }
  AE_DEVICE bool partial(int j) const { return state && tile_code(state[j]) == kBlockPartial; }
  // Block j's whole entry (kBlockFull without a table).
  AE_DEVICE unsigned char entry(int j) const { return state ? state[j] : kBlockFull; }
};

// Backward: the (query head of the GQA group, query block) pairs of key block n_block of
// (b, KV head h_kv), in order, with their codes; empty blocks are skipped. Under a mask the
// walk reads the codes of kWarpSize blocks at once, a lane each, into two ballots (kept, partly
// kept) and pops blocks from them: one load latency per kWarpSize blocks, and the walk's state
// is uniform across the warp (uniform registers, not per-thread ones). Every lane of the warp
// must call it.
// kOwnCount (packed sequences): the walk stops at the batch's own query blocks (n_q, given),
// not at p.n_q_blocks (the longest sequence's); a walk of dense tensors holds no count.
// kHalves (the sm90 backward's MMA warpgroups, AE_KEY_HALVES): an item's code is that of half
// `half` of the tile (a table with halves of the keys, common/block_state.h; kBlockEmpty where
// the half keeps nothing of a block the tile keeps something of), while the blocks walked are
// the tile's: every walker of a CTA pops the same. (A template flag: the half's ballot cost the
// register-tight kernels a register they did not have.)
template <bool kOwnCount, bool kHalves = false>
struct ColumnWalkOf {
  struct Item {
    int hq_off, mb, code;  // hq_off == p.group: past the end
  };
  int hq_off, base;          // the window: blocks base .. base + kWarpSize - 1 of head hq_off
  LaneMask kept, partial;    // bit i: block base + i has something kept / is partly kept
  LaneMask none;             // kHalves, bit i: the half keeps nothing of block base + i
  bool states;               // walk the table (else every block, full)
  int own;                   // kOwnCount: the batch's query blocks
  int half;                  // kHalves: which

  AE_DEVICE ColumnWalkOf(const AttnParams& p, int b, int h_kv, int n_block, bool masked, int n_q = 0,
                         int half_ = -1)
      : hq_off(0), base(0), kept(0), partial(0), none(0), states(masked && p.block_state),
        own(n_q), half(half_) {
    if (states && p.group > 0) load(p, b, h_kv, n_block);
  }
  AE_DEVICE int n_q_blocks(const AttnParams& p) const {
    if constexpr (kOwnCount) return own;
    else return p.n_q_blocks;
  }
  AE_DEVICE void load(const AttnParams& p, int b, int h_kv, int n_block) {
    const int m = base + static_cast<int>(threadIdx.x % kWarpSize);
    const unsigned char* col = p.block_state + b * p.state_stride_b +
                               (h_kv * p.group + hq_off) * p.state_stride_h + n_block;
    const unsigned char e = m < n_q_blocks(p) ? col[static_cast<long long>(m) * p.n_kv_blocks] : 0;
    const int mine = kHalves ? half_code(e, half) : tile_code(e);
    kept = ballot(tile_code(e) != kBlockEmpty);
    partial = ballot(mine == kBlockPartial);
    if constexpr (kHalves) none = ballot(mine == kBlockEmpty);
  }
  AE_DEVICE Item pop(const AttnParams& p, int b, int h_kv, int n_block) {
    if (!states) {
      if (kOwnCount && own <= 0) return {p.group, 0, 0};  // (a sequence without queries)
      const Item r{hq_off, base, kBlockFull};
      if (++base >= n_q_blocks(p)) hq_off += 1, base = 0;
      return r;
    }
    while (kept == 0) {
      if ((base += kWarpSize) >= n_q_blocks(p)) hq_off += 1, base = 0;
      if (hq_off >= p.group) return {p.group, 0, 0};
      load(p, b, h_kv, n_block);
    }
    const int i = first_lane(kept) - 1;
    kept &= kept - 1;
    return {hq_off, base + i,
            (partial >> i) & 1 ? kBlockPartial
            : kHalves && (none >> i) & 1 ? kBlockEmpty : kBlockFull};
  }
};
using ColumnWalk = ColumnWalkOf<false>;

// A backward's query blocks of batch b, for a ColumnWalkOf<true> (packed sequences; 0 for dense
// layouts, whose walks read p.n_q_blocks).
template <class Layout, int kBlockM>
AE_DEVICE int q_blocks_of(const AttnParams& p, int b) {
  if constexpr (Layout::kVarlen) return (Layout::q_len(p, b) + kBlockM - 1) / kBlockM;
  else return 0;
}

}  // namespace ae
