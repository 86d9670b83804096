// The gate-training forward's second step (the attention_pooled op, csrc/torch/pooled.h): the
// pooled attention map from each query row's largest score per key block (AttnParams::
// block_max, log2 units, written by the forward: nvidia/mma_rows.h store_block_max; -inf
// where the walk skipped the block) and the row's LSE: per query block of pool_block rows and
// key block, the block's largest probability max_rows exp2(block_max - lse * log2(e)) (exp2 of
// the max: it is monotone), each query block's row then divided by its sum over the key
// blocks. Rows that keep nothing (lse -inf) give 0; so does a block nothing reaches. One warp
// per (batch, head, query block), kPoolThreads per CTA, reading the query block's maxima as one
// contiguous stream (common/block_max_layout.h).
#pragma once

#include "common/ae_common.h"
#include "common/block_max_layout.h"
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
  const float* maxima = p.block_max + block_max_index(p, bh, r0, 0, p.pool_block);
  float* out = p.pooled + w * p.n_pool_blocks;
  // Lane i's rows are r0 + i + 32 j. Their LSE in log2 units is read once (+inf for rows that
  // keep nothing: their terms are -inf); the key blocks go kUnroll at a time, so that a lane
  // has kUnroll * kRows loads in flight.
  constexpr int kRows = 4, kUnroll = 4;
  auto lse2_of = [&](int r) {
    const float l = lse[r];
    return l == neg_inf() ? -neg_inf() : l * kLog2e;
  };
  float lse2[kRows];
#pragma unroll
  for (int j = 0; j < kRows; ++j) {
    const int r = r0 + lane + kWarpSize * j;
    lse2[j] = r < r1 ? lse2_of(r) : -neg_inf();
  }
  float sum = 0.f;
  // The key blocks' terms, kUnroll blocks a step: -inf past the blocks or the query block.
  auto terms = [&](int kb0, float (&m)[kUnroll][kRows]) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int kb = kb0 + u;
      const float* col = maxima + static_cast<long long>(kb) * p.pool_block;  // row r0 + i at i
#pragma unroll
      for (int j = 0; j < kRows; ++j) {
        const int r = r0 + lane + kWarpSize * j;
        m[u][j] = kb < p.n_pool_blocks && r < r1 ? col[r - r0] - lse2[j] : neg_inf();
      }
    }
  };
  // A step's largest terms over the query block (every lane), their exp2 stored and summed.
  auto reduce_store = [&](int kb0, const float (&m)[kUnroll][kRows]) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int kb = kb0 + u;
      if (kb >= p.n_pool_blocks) break;
      float x = m[u][0];
#pragma unroll
      for (int j = 1; j < kRows; ++j) x = fmaxf(x, m[u][j]);
      for (int o = kWarpSize / 2; o > 0; o /= 2) x = fmaxf(x, shfl_xor(x, o));
      const float v = exp2f(x);
      sum += v;
      if (lane == 0) out[kb] = v;
    }
  };
  if (p.pool_block <= kRows * kWarpSize) {
    // Software-pipelined: the next step's loads are issued before this step's stores (the
    // compiler cannot move a load past a store to memory that may alias it).
    float cur[kUnroll][kRows], next[kUnroll][kRows];
    terms(0, cur);
    for (int kb0 = 0; kb0 < p.n_pool_blocks; kb0 += kUnroll) {
      terms(kb0 + kUnroll, next);  // (past the last block: no loads, -inf)
      reduce_store(kb0, cur);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
#pragma unroll
        for (int j = 0; j < kRows; ++j) cur[u][j] = next[u][j];
    }
  } else {  // (blocks of more rows than the registers hold: the LSE read as it goes)
    for (int kb0 = 0; kb0 < p.n_pool_blocks; kb0 += kUnroll) {
      float m[kUnroll][kRows];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
        for (int j = 0; j < kRows; ++j) m[u][j] = neg_inf();
        const int kb = kb0 + u;
        if (kb >= p.n_pool_blocks) continue;
        const float* col = maxima + static_cast<long long>(kb) * p.pool_block;
        for (int r = r0 + lane; r < r1; r += kWarpSize)
          m[u][0] = fmaxf(m[u][0], col[r - r0] - lse2_of(r));
      }
      reduce_store(kb0, m);
    }
  }
#if AE_NVIDIA
  __syncwarp();  // lane 0's stores, for the other lanes (a wavefront runs in lockstep)
#endif
  const float inv = 1.f / fmaxf(sum, 1.17549435e-38f);  // (a row of zeros stays zeros)
  for (int kb = lane; kb < p.n_pool_blocks; kb += kWarpSize) out[kb] *= inv;
}

}  // namespace ae
