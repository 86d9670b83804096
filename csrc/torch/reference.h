// The reference executor: the attention math over the full score matrix with ATen, on any
// device and in any float dtype (fp32 math for fp16/bf16 inputs, fp64 for fp64). It runs the
// same op graph the kernels are generated from, and its backward is the same math the kernels
// run: P recomputed, dS = P * (dP - rowsum(P * dP)) * d score_mod / d score, and gradients of
// captured tensors scatter-added from dS * d score_mod / d value. So it is both the CPU path
// and the oracle for the GPU tests. Query rows go in chunks of at most 2^28 scores
// (AE_REFERENCE_MAX_SCORES lowers it): each chunk's rows see all keys; dK, dV and the
// captured tensors' gradients are summed over chunks. The backward recomputes what it needs
// from q, k and v (out and lse are not read).
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/List.h>

#include <optional>
#include <tuple>
#include <vector>

namespace ae::torch_ops {

// Returns (out [B,Hq,Sq,Dv] in q's dtype, lse [B,Hq,Sq] float32 (float64 for float64 inputs),
// natural log; -inf for rows with nothing left; zeros when normalize is "none").
std::tuple<at::Tensor, at::Tensor> reference_forward(const at::Tensor& q, const at::Tensor& k,
                                                     const at::Tensor& v,
                                                     const std::vector<at::Tensor>& buffers,
                                                     const std::string& variant, double scale);

// Returns (dq, dk, dv, dbuffers): dbuffers[i] has buffer i's shape and dtype where
// buffer_grads[i], else it is an empty tensor.
std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> reference_backward(
    const at::Tensor& dout, const std::optional<at::Tensor>& dlse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    const std::vector<at::Tensor>& buffers, const std::string& variant, double scale,
    const c10::List<bool>& buffer_grads);

}  // namespace ae::torch_ops
