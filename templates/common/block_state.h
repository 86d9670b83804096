// Classifies every (query block, key block) tile by the mask: kBlockEmpty (nothing kept),
// kBlockPartial, kBlockFull (positions past the sequence ends do not count: the layout's
// lengths, so that packed sequences' tiles past their own ends are empty; their table is per
// batch). The block walks
// (common/block_walk.h) skip empty tiles and apply the mask only to partial ones. One CTA of
// kBlockStateThreads per tile; the grid is (kv blocks, q blocks, batches x heads the mask
// depends on).
#pragma once

#include "common/ae_common.h"
#include "common/block_walk.h"
#include "common/kv_layout.h"
#include "common/params.h"
#include "common/shapes.h"
#include "common/variant_support.h"  // (offset: clamped indices)

namespace ae {

// A tile's code from whether its scores keep anything and everything.
AE_DEVICE unsigned char code_of(bool any, bool all) {
  return any ? (all ? kBlockFull : kBlockPartial) : kBlockEmpty;
}

// The table entry of a tile with code `tile` whose halves (query rows 0 .. half_m - 1 and the
// rest, or keys 0 .. half_n - 1 and the rest) have codes c0 and c1: with bs.half_m or
// bs.half_n, the halves too (common/block_walk.h).
AE_DEVICE unsigned char entry_of(const BlockStateParams& bs, int tile, int c0, int c1) {
  return static_cast<unsigned char>(bs.half_m > 0 || bs.half_n > 0 ? tile | kBlockHalves | c0 << 2 | c1 << 4 : tile);
}

template <class Layout, class Variant>
AE_DEVICE void block_state(const AttnParams& p, const Variant& var, const BlockStateParams& bs) {
  const int kb = blockIdx.x, mb = blockIdx.y, bh = blockIdx.z;
  const int heads = bs.per_head ? p.q_heads : 1;
  const int b = bs.per_batch ? bh / heads : 0, h = bs.per_head ? bh % heads : 0;
  const int q0 = mb * bs.block_m, k0 = kb * bs.block_n;
  const int qn = min(bs.block_m, Layout::q_len(p, b) - q0),
            kn = min(bs.block_n, Layout::kv_len(p, b) - k0);
  // The first half's rows (or keys, with half_n)
  const int hm = bs.half_m > 0 ? bs.half_m : bs.block_m, hn = bs.half_n > 0 ? bs.half_n : bs.block_n;
  // (A tile past both of a packed sequence's ends has qn and kn negative: their product is
  // not the tile's size.)
  const int n = qn > 0 && kn > 0 ? qn * kn : 0;
  bool any0 = false, all0 = true, any1 = false, all1 = true;  // per half; a half without rows
  for (int i = threadIdx.x; i < n; i += blockDim.x) {          // keeps nothing, spoils nothing
    const int r = i / kn, c = i % kn;
    const bool keep = var.mask(b, h, q0 + r, k0 + c);
    if (r < hm && c < hn) any0 = any0 || keep, all0 = all0 && keep;
    else any1 = any1 || keep, all1 = all1 && keep;
  }
  any0 = __syncthreads_or(any0);
  all0 = __syncthreads_and(all0);
  any1 = __syncthreads_or(any1);
  all1 = __syncthreads_and(all1);
  if (threadIdx.x == 0)
    bs.state[(static_cast<long long>(bh) * p.n_q_blocks + mb) * p.n_kv_blocks + kb] =
        entry_of(bs, code_of(any0 || any1, all0 && all1), code_of(any0, all0), code_of(any1, all1));
}

// The variant's block tensor (csrc/ir/block_mask.h) as compile-time facts: element type T,
// captured index kBuf, blocks of kBQ x kBK scores (kBQ 0: one row of blocks for all
// queries), indexed by b (kByBatch, else 0) and by head 0 (kHeadDiv 0), h (1) or h / kHeadDiv;
// kCodes: codes 0 / 1 / 2 (empty, the rest decides, full), else bool (kept: the rest decides).
template <class T, int kBuf, int kBQ, int kBK, bool kByBatch, int kHeadDiv, bool kCodes>
struct BlockTensor {
  static constexpr int kQ = kBQ, kK = kBK;
  // 0 (nothing kept), 1 (what the rest keeps), 2 (everything) for user block (qb, kb).
  // (Indices clamped into the tensor as the mask's own load clamps them: the table and the
  // per-score mask agree on every tensor, the wrong-sized ones included.)
  AE_DEVICE static int code(const VariantArgs& va, int b, int h, int qb, int kb) {
    const BufferArg& t = va.buf[kBuf];
    const long long idx[4] = {kByBatch ? b : 0, kHeadDiv == 0 ? 0 : h / kHeadDiv, qb, kb};
    const T v = static_cast<const T*>(t.data)[offset<4>(t, idx)];
    // (A code other than 1 or 2 keeps nothing, as (s == 2) | ((s == 1) & rest) says.)
    return kCodes ? (v == 2 ? 2 : v == 1 ? 1 : 0) : (v != 0 ? 1 : 0);
  }
};

// The table from a block tensor and the rest's table: a thread per tile (grid over batches x
// heads x query blocks x key blocks of the table, kBlockStateThreads per CTA). A tile reads
// the codes of the user blocks it overlaps: none kept, it is empty; all full, or all kept
// where the rest keeps the whole tile, it is full; else partial (the kernels then apply the
// whole mask, the lookup included, per score). No score is evaluated: a gate's blocks change
// every call, and this costs a few loads per tile where the per-score pass cost a pass over
// the S x S map.
template <class Layout, class Blocks>
AE_DEVICE void block_state_from_blocks(const AttnParams& p, const VariantArgs& va,
                                       const BlockStateParams& bs) {
  const long long tiles_per_bh = static_cast<long long>(p.n_q_blocks) * p.n_kv_blocks;
  const long long t = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int heads = bs.per_head ? p.q_heads : 1;
  if (t >= tiles_per_bh * (bs.per_batch ? p.batch : 1) * heads) return;
  const int kb = static_cast<int>(t % p.n_kv_blocks), mb = static_cast<int>(t / p.n_kv_blocks % p.n_q_blocks);
  const int bh = static_cast<int>(t / tiles_per_bh);
  const int b = bs.per_batch ? bh / heads : 0, h = bs.per_head ? bh % heads : 0;
  const int q0 = mb * bs.block_m, k0 = kb * bs.block_n;
  const int qn = min(bs.block_m, Layout::q_len(p, b) - q0),
            kn = min(bs.block_n, Layout::kv_len(p, b) - k0);
  unsigned char rest = kBlockFull;  // the rest's entry (halves, where its table has them)
  if (bs.rest) {
    const int rheads = bs.rest_per_head ? p.q_heads : 1;
    const long long rbh = (bs.rest_per_batch ? b : 0) * rheads + (bs.rest_per_head ? h : 0);
    rest = bs.rest[(rbh * p.n_q_blocks + mb) * p.n_kv_blocks + kb];
  }
  // The code of query rows r0 .. r0 + rn - 1 and keys c0 .. c0 + cn - 1 (a tile, or a half of
  // it) whose rest's code is `rc`.
  auto classify = [&](int r0, int rn, int c0, int cn, int rc) -> int {
    if (rn <= 0 || cn <= 0) return kBlockEmpty;
    bool none = false, all = false, some = false;  // blocks keeping nothing, all, the rest's
    // (kQ 0: one row of blocks, for every query)
    int qb0 = 0, qb1 = 0;
    if constexpr (Blocks::kQ > 0) qb0 = r0 / Blocks::kQ, qb1 = (r0 + rn - 1) / Blocks::kQ;
    for (int qb = qb0; qb <= qb1; ++qb)
      for (int kbu = c0 / Blocks::kK; kbu <= (c0 + cn - 1) / Blocks::kK; ++kbu) {
        const int c = Blocks::code(va, b, h, qb, kbu);
        none = none || c == 0;
        all = all || c == 2;
        some = some || c == 1;
      }
    // The rest decides its blocks: wholly where its own tile is full or empty.
    all = all || (some && rc == kBlockFull);
    none = none || (some && rc == kBlockEmpty);
    const bool partial = some && rc == kBlockPartial;
    return !all && !partial ? kBlockEmpty : !none && !partial ? kBlockFull : kBlockPartial;
  };
  const int tile = classify(q0, qn, k0, kn, tile_code(rest));
  unsigned char code;
  if (bs.half_n > 0) {  // halves of the keys
    const int hn = bs.half_n;
    code = entry_of(bs, tile, classify(q0, qn, k0, min(kn, hn), half_code(rest, 0)),
                    classify(q0, qn, k0 + hn, kn - hn, half_code(rest, 1)));
  } else {
    const int hm = bs.half_m > 0 ? bs.half_m : bs.block_m;
    code = entry_of(bs, tile, classify(q0, min(qn, hm), k0, kn, half_code(rest, 0)),
                    classify(q0 + hm, qn - hm, k0, kn, half_code(rest, 1)));
  }
  bs.state[t] = code;
}

}  // namespace ae
