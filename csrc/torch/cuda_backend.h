// The CUDA kernels behind the torch ops (registered for the CUDA dispatch key in
// cuda_backend.cpp) and what a call with given inputs would run.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace ae::torch_ops {

// "sm90" (the main kernel's family of the forward) or "sm80" when the fused kernels run,
// "sm90 (backward on the reference: <why>)" when only the forward does, else
// "reference: <why>". backward: the backward's main kernel's family, or "reference: <why>".
std::string backend_for(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const std::vector<at::Tensor>& buffers, const std::string& key,
                        bool backward = false);

// What the attention_varlen op runs with these inputs: "<family> (packed sequences)" (the
// kernels' varlen layout), "padded: <why>" (the sequences padded into a batch for the dense
// forward), or "reference: <why>".
std::string varlen_backend_for(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const std::vector<at::Tensor>& buffers, const std::string& key,
                               const at::Tensor& cu_q, const at::Tensor& cu_k, int64_t max_q,
                               int64_t max_k);

// What the attention_paged op runs with these inputs: "<family> (pages in place)" (a forward on
// the kernels' paged layout), "gathered: <why>" (the pages gathered into dense tensors for the
// dense forward), or "reference: <why>".
std::string paged_backend_for(const at::Tensor& q, const at::Tensor& k_pages,
                              const at::Tensor& v_pages, const std::vector<at::Tensor>& buffers,
                              const std::string& key, const at::Tensor& table);

// Drops the in-process kernels and kept block-state tables (the disk cache stays).
void clear_kernel_caches();

}  // namespace ae::torch_ops
