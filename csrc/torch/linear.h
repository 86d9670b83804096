// Linear attention's ops (python/attention_engine/linear.py: its feature maps and decays are
// applied in PyTorch, these run the recurrence on their results). q, k [B, H, T, Dk], v
// [B, H, T, Dv] (scale applied to the output), a: natural-log decays, fp32, [B, H, T] or per
// key channel [B, H, T, Dk]; states fp32 (fp64 for fp64 inputs) [B, H, Dk, Dv].
//   linear_forward: the chunked forward, (o, final state; an empty tensor unless asked); chunk:
//   the reference's tokens per chunk (the kernels' are 64); cu_seqlens: packed sequences (B 1,
//   the states one per sequence, [N, H, Dk, Dv]).
//   linear_step: one token (T = 1) against the state, updated in place; returns o.
// CUDA: the fused kernels (plan/linear_plan.h) where they take the call, else (after one
// warning) the reference below, which every other device runs: chunks of 64 tokens in the
// accumulation dtype, every decay factor exp of a sum of log-decays (never a difference).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>
#include <tuple>

namespace ae::torch_ops {

std::tuple<at::Tensor, at::Tensor> linear_forward_reference(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& a,
    const std::optional<at::Tensor>& state0, double scale, bool output_state, int64_t chunk,
    const std::optional<at::Tensor>& cu_seqlens);
std::tuple<at::Tensor, at::Tensor> linear_forward_meta(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& a,
    const std::optional<at::Tensor>& state0, double scale, bool output_state, int64_t chunk,
    const std::optional<at::Tensor>& cu_seqlens);
std::tuple<at::Tensor, at::Tensor> linear_forward_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& a,
    const std::optional<at::Tensor>& state0, double scale, bool output_state, int64_t chunk,
    const std::optional<at::Tensor>& cu_seqlens);

// The chunked forward's backward (the fused kernels only; the caller asks linear_backward_reason
// first): (dq, dk, dv, da, the initial state's gradient: an empty tensor unless asked).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_backward_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& a,
    const std::optional<at::Tensor>& state0, const at::Tensor& dout,
    const std::optional<at::Tensor>& dstate, double scale, bool want_dstate0,
    const std::optional<at::Tensor>& cu_seqlens);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_backward_meta(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& a,
    const std::optional<at::Tensor>& state0, const at::Tensor& dout,
    const std::optional<at::Tensor>& dstate, double scale, bool want_dstate0,
    const std::optional<at::Tensor>& cu_seqlens);
// Why linear_backward_cuda cannot take q (CUDA, its dtype, head dims) and v ('' when it can).
std::string linear_backward_reason(const at::Tensor& q, const at::Tensor& v, bool per_channel,
                                   const std::vector<int64_t>& offsets = {});

at::Tensor linear_step_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& a, at::Tensor& state, double scale);
at::Tensor linear_step_meta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& a, at::Tensor& state, double scale);
at::Tensor linear_step_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& a, at::Tensor& state, double scale);

}  // namespace ae::torch_ops
