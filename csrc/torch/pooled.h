// The gate-training forward (SeerAttention's target: ../shared/notes/designs-of-the-fastest-
// kernels.md §6): the attention output and, per query block and key block, the block's largest
// attention probability, each query block's row divided by its sum over the key blocks. The
// CUDA kernels write each row's largest score per key block (nvidia/mma_rows.h
// store_block_max, in log2 units) and pool them into the map (common/pool_map.h); the
// reference executor's maxima go through pool_block_max. Softmax variants only (the largest
// probability of a block is exp(largest score - LSE) there).
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <tuple>
#include <vector>

#include "torch/checks.h"

namespace ae::torch_ops {

// check_inputs, plus a positive block and a softmax variant.
Shapes check_pooled_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const std::vector<at::Tensor>& buffers, const ir::Variant& variant,
                           int64_t block);

// The map from block maxima in log2 units, block_max2 [B, H, n_kv_blocks, Sq] (the reference
// executor's; consumed: the probabilities are computed in place), and the natural-log LSE
// [B, H, Sq]: [B, H, n_q_blocks, n_kv_blocks] in lse's dtype; 0 for blocks that keep nothing,
// rows of zeros for query blocks that keep nothing.
at::Tensor pool_block_max(at::Tensor block_max2, const at::Tensor& lse, int64_t block);

// The reference executor's (out, lse, pooled map), on any device (deterministic: the op's
// argument for autograd's backward; the forward is the same either way).
std::tuple<at::Tensor, at::Tensor, at::Tensor> reference_pooled(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::vector<at::Tensor>& buffers, const std::string& variant, double scale,
    int64_t block, bool deterministic);

// The op's output shapes (the Meta kernel).
std::tuple<at::Tensor, at::Tensor, at::Tensor> pooled_meta(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::vector<at::Tensor>& buffers, const std::string& variant, double scale,
    int64_t block, bool deterministic);

}  // namespace ae::torch_ops
