// From torch tensors to the plain descriptions below the torch layer: the planner's Problem
// and the runner's TensorRefs, and the inputs made fit for the kernels.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "plan/problem.h"
#include "runner/runner.h"
#include "torch/checks.h"

namespace ae::torch_ops {

plan::ElemType elem_type(at::ScalarType t);

// The call as the planner sees it. wants_grad: the backward's buffer_grads (empty: forward).
plan::Problem problem_of(plan::OpKind kind, const at::Tensor& q, const Shapes& s,
                         const std::vector<at::Tensor>& buffers, double scale,
                         const std::vector<bool>& wants_grad = {});

runner::TensorRef ref(const at::Tensor& t);

// t itself when the kernels can read it in place (runner::unfit_for_kernels), else a
// contiguous copy.
at::Tensor kernel_ready(const at::Tensor& t);

// q, k, v, the captured tensors (with their fp32 gradients where `grads` has them), and the
// current CUDA stream of q's device.
runner::Bindings bind_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const std::vector<at::Tensor>& buffers,
                             const std::vector<at::Tensor>& grads = {});

}  // namespace ae::torch_ops
