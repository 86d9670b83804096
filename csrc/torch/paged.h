// A paged KV cache's pages as the dense tensors the other kernels and the reference take
// (the attention_paged op's fallback and its reference), and that op's input checks.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "ir/variant.h"
#include "torch/checks.h"

namespace ae::torch_ops {

// pages [num_pages, heads, page_size, d], table [batch, max_pages] (int32) -> [batch, heads,
// max_pages * page_size, d]: batch b's row r is row r % page_size of page table[b, r /
// page_size]. Out-of-range page indices read page 0 (those rows are past a sequence's end).
at::Tensor dense_from_pages(const at::Tensor& pages, const at::Tensor& table);

// Checks q [B, Hq, Sq, D], the pages and the table (and the captured tensors as check_inputs
// does); the shapes of the dense problem (kv_len: the table's capacity).
Shapes check_paged_inputs(const at::Tensor& q, const at::Tensor& k_pages, const at::Tensor& v_pages,
                          const std::vector<at::Tensor>& buffers, const ir::Variant& variant,
                          const at::Tensor& table);

}  // namespace ae::torch_ops
