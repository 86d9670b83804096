// Classifies every (query block, key block) tile by the mask: 0 nothing kept, 1 partly kept,
// 2 everything kept (positions past the sequence ends do not count). Attention kernels skip
// empty tiles and apply the mask only to partial ones. One CTA per tile; the grid is
// (kv blocks, q blocks, batches x heads the mask depends on).
#pragma once

#include "common/ae_common.h"
#include "common/params.h"

namespace ae {

template <class Variant>
AE_DEVICE void block_state(const AttnParams& p, const Variant& var, unsigned char* state,
                           int block_m, int block_n, int per_batch, int per_head) {
  const int kb = blockIdx.x, mb = blockIdx.y, bh = blockIdx.z;
  const int heads = per_head ? p.q_heads : 1;
  const int b = per_batch ? bh / heads : 0, h = per_head ? bh % heads : 0;
  const int q0 = mb * block_m, k0 = kb * block_n;
  const int qn = min(block_m, p.q_len - q0), kn = min(block_n, p.kv_len - k0);
  bool any = false, all = true;
  for (int i = threadIdx.x; i < qn * kn; i += blockDim.x) {
    const bool keep = var.mask(b, h, q0 + i / kn, k0 + i % kn);
    any = any || keep;
    all = all && keep;
  }
  any = __syncthreads_or(any);
  all = __syncthreads_and(all);
  if (threadIdx.x == 0)
    state[(static_cast<long long>(bh) * p.n_q_blocks + mb) * p.n_kv_blocks + kb] =
        any ? (all ? 2 : 1) : 0;
}

}  // namespace ae
