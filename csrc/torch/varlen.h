// Packed sequences of different lengths (the attention_varlen op): input checks, and the
// padding to dense [n, H, longest, D] tensors that the reference (and a forward no kernel takes)
// runs on.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/core/List.h>

#include "ir/variant.h"
#include "torch/checks.h"

namespace ae::torch_ops {

// Checks q [total_q, Hq, D], k / v [total_k, Hkv, D], the cumulative lengths (int32, n + 1
// entries each, on q's device) and the captured tensors (as check_inputs does), and that the
// variant bounds its keys by per-sequence lengths (kv_idx < lengths[b], ir/length_bound.h: the
// kernels take each sequence's key count from cu_seqlens_k in its place). The shapes of the
// dense problem: batch n, q_len / kv_len the longest sequence's. The lengths' values are the
// caller's to check (they live on the device): python/attention_engine/inference.py varlen
// does; the kernels clamp the query counts into the longest and take key counts from the
// bound's lengths tensor, which must equal cu_seqlens_k's differences.
Shapes check_varlen_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const std::vector<at::Tensor>& buffers, const ir::Variant& variant,
                           const at::Tensor& cu_q, const at::Tensor& cu_k, int64_t max_q,
                           int64_t max_k);

// x [total, H, D] -> [n, H, width, D]: row j of sequence i is token cu[i] + j, zeros past its
// length.
at::Tensor dense_from_varlen(const at::Tensor& x, const at::Tensor& cu, int64_t width);

// [n, H, width, D] -> [total, H, D] (contiguous): dense_from_varlen's inverse.
at::Tensor tokens_from_dense(const at::Tensor& x, const at::Tensor& cu, int64_t total);

// The forward's outputs back in token order: out [n, Hq, width, Dv] -> [total, Hq, Dv], lse
// [n, Hq, width] -> [Hq, total] (FlashAttention's), both contiguous.
std::tuple<at::Tensor, at::Tensor> varlen_from_dense(const at::Tensor& out, const at::Tensor& lse,
                                                     const at::Tensor& cu, int64_t total);

// A dense backward op's signature (attention_backward's).
using DenseBackward = std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> (*)(
    const at::Tensor& dout, const std::optional<at::Tensor>& dlse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    const std::vector<at::Tensor>& buffers, const std::string& variant, double scale,
    const c10::List<bool>& buffer_grads, bool deterministic);

// attention_varlen_backward by `backward` on the sequences padded into a batch (padding rows:
// zero dout and an empty row's lse, -inf, so they add nothing), the gradients back in token
// order. (A custom normalization's statistic has no such value: varlen() sends those to its
// padded route.)
std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> varlen_backward_padded(
    DenseBackward backward, const at::Tensor& dout, const std::optional<at::Tensor>& dlse,
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const std::vector<at::Tensor>& buffers, const std::string& variant,
    double scale, const c10::List<bool>& buffer_grads, const at::Tensor& cu_q,
    const at::Tensor& cu_k, int64_t max_q, int64_t max_k);

}  // namespace ae::torch_ops
