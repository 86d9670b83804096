// The gate-training forward's second step (the attention_pooled op, csrc/torch/pooled.h): the
// pooled attention map from each query row's largest score per key block (AttnParams::
// block_max, log2 units, written by the forward: nvidia/mma_rows.h store_block_max; -inf
// where the walk skipped the block) and the row's LSE: per query block of pool_block rows and
// key block, the block's largest probability max_rows exp2(block_max - lse * log2(e)) (exp2 of
// the max: it is monotone), each query block's row then divided by its sum over the key
// blocks. Rows that keep nothing (lse -inf) give 0; so does a block nothing reaches. One warp
// per (batch, head, query block), kPoolThreads per CTA; a key block's rows are one contiguous
// read.
#pragma once

#include "common/ae_common.h"
#include "common/numeric.h"
#include "common/params.h"
#include "common/shapes.h"

namespace ae {

AE_DEVICE void pool_map(const AttnParams& p) {
  const int nq = (p.q_len + p.pool_block - 1) / p.pool_block;
  const long long w = static_cast<long long>(blockIdx.x) * (kPoolThreads / kWarpSize) +
                      threadIdx.x / kWarpSize;
  if (w >= static_cast<long long>(p.batch) * p.q_heads * nq) return;  // whole warps leave
  const int lane = threadIdx.x % kWarpSize;
  const long long bh = w / nq;
  const int r0 = static_cast<int>(w % nq) * p.pool_block;
  const int r1 = r0 + p.pool_block < p.q_len ? r0 + p.pool_block : p.q_len;
  const float* lse = p.lse + bh * p.q_len;
  const float* maxima = p.block_max + bh * p.n_pool_blocks * p.q_len;
  float* out = p.pooled + w * p.n_pool_blocks;
  float sum = 0.f;
  for (int kb = 0; kb < p.n_pool_blocks; ++kb) {
    float m = neg_inf();
    for (int r = r0 + lane; r < r1; r += kWarpSize) {
      const float l = lse[r];  // (+inf for rows that keep nothing: their terms are -inf)
      m = fmaxf(m, maxima[static_cast<long long>(kb) * p.q_len + r] -
                       (l == neg_inf() ? -neg_inf() : l * kLog2e));
    }
    for (int o = kWarpSize / 2; o > 0; o /= 2) m = fmaxf(m, shfl_xor(m, o));
    const float v = exp2f(m);  // (every lane holds the same m)
    sum += v;
    if (lane == 0) out[kb] = v;
  }
#if AE_NVIDIA
  __syncwarp();  // lane 0's stores, for the other lanes (a wavefront runs in lockstep)
#endif
  const float inv = 1.f / fmaxf(sum, 1.17549435e-38f);  // (a row of zeros stays zeros)
  for (int kb = lane; kb < p.n_pool_blocks; kb += kWarpSize) out[kb] *= inv;
}

}  // namespace ae
