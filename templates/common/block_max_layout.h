// Where the gate-training forward keeps each query row's largest score per key block
// (AttnParams::block_max): [batch, q_heads, ceil(q_len / pool), n_pool_blocks, pool], a query
// block's rows of one key block contiguous and its key blocks one after the other. The
// forwards write it (nvidia/mma_rows.h store_block_max), the map's pass reads one stream per
// query block (common/pool_map.h); the host sizes it (csrc/torch/cuda_backend.cpp). Its last
// query block is padded to pool rows: a call of fewer queries than pool (decode-like) takes
// pool / q_len times the bytes of a per-row layout.
#pragma once

#include "common/ae_common.h"
#include "common/params.h"

namespace ae {

// The element of query row r and key block kb of batch-head bh (pool: the pooled block's rows
// and keys, a compile-time constant in the forwards).
AE_DEVICE long long block_max_index(const AttnParams& p, long long bh, int r, int kb, int pool) {
  const long long q_blocks = (p.q_len + pool - 1) / pool;
  return ((bh * q_blocks + r / pool) * p.n_pool_blocks + kb) * pool + r % pool;
}

}  // namespace ae
