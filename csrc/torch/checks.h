// Validation of the op's inputs, shared by every backend: the error names the tensor, the
// expected layout and what was passed (ValueError / TypeError in Python).
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "ir/variant.h"

namespace ae::torch_ops {

struct Shapes {
  int64_t batch, q_heads, kv_heads, q_len, kv_len, head_dim_qk, head_dim_v;
  int64_t q_offset = 0;  // the reference executor's query rows in chunks: the first one's q_idx
  // v is k's first head_dim_v columns, the same memory (v_shares_k; set by the CUDA backend:
  // the checks also serve the Meta kernels, whose fake tensors have no data pointer)
  bool v_in_k = false;
  int64_t group() const { return q_heads / kv_heads; }
};

// Whether v is a view of k's first v.size(3) columns (v = k[..., :dv]: MLA's latent cache, the
// planner's Problem::v_in_k): the same data pointer, sizes and strides but for the last size.
bool v_shares_k(const at::Tensor& k, const at::Tensor& v);

// Looks up the variant registered under `key` (attention_engine.compile registers it).
std::shared_ptr<const ir::Variant> get_variant(const std::string& key);

Shapes check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const std::vector<at::Tensor>& buffers, const ir::Variant& variant);

}  // namespace ae::torch_ops
