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

namespace ae {

template <class Layout, class Variant>
AE_DEVICE void block_state(const AttnParams& p, const Variant& var, const BlockStateParams& bs) {
  const int kb = blockIdx.x, mb = blockIdx.y, bh = blockIdx.z;
  const int heads = bs.per_head ? p.q_heads : 1;
  const int b = bs.per_batch ? bh / heads : 0, h = bs.per_head ? bh % heads : 0;
  const int q0 = mb * bs.block_m, k0 = kb * bs.block_n;
  const int qn = min(bs.block_m, Layout::q_len(p, b) - q0),
            kn = min(bs.block_n, Layout::kv_len(p, b) - k0);
  bool any = false, all = true;
  for (int i = threadIdx.x; i < qn * kn; i += blockDim.x) {
    const bool keep = var.mask(b, h, q0 + i / kn, k0 + i % kn);
    any = any || keep;
    all = all && keep;
  }
  any = __syncthreads_or(any);
  all = __syncthreads_and(all);
  if (threadIdx.x == 0)
    bs.state[(static_cast<long long>(bh) * p.n_q_blocks + mb) * p.n_kv_blocks + kb] =
        any ? (all ? kBlockFull : kBlockPartial) : kBlockEmpty;
}

}  // namespace ae
