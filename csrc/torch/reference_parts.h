// The reference executor's pieces shared by the built-in normalizations (reference.cpp) and
// the custom ones (reference_custom.cpp).
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/List.h>

#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "ir/graph.h"
#include "ir/variant.h"
#include "torch/checks.h"

namespace ae::torch_ops::ref {

// fp32 math for fp16/bf16/fp32 inputs, fp64 for fp64.
at::ScalarType compute_dtype(const at::Tensor& q);
// K/V heads repeated for GQA: query head h reads kv head h / group.
at::Tensor expand_heads(const at::Tensor& t, int64_t group, at::ScalarType cdt);
// Sums a gradient over the query heads that share one kv head.
at::Tensor reduce_heads(const at::Tensor& t, const Shapes& s);

struct Scores {
  at::Tensor x;     // score_mod(q k^T * scale), [B,Hq,Sq,Skv]
  at::Tensor keep;  // mask_mod, bool, broadcastable to x; undefined when there is no mask
  std::vector<at::Tensor> values;  // every evaluated per-element node of the graph
};
Scores compute_scores(const ir::Graph& g, const at::Tensor& q, const at::Tensor& kf,
                      const std::vector<at::Tensor>& buffers, const Shapes& s, double scale,
                      at::ScalarType cdt);

// A custom normalization's outputs that hold one value per query row (they read the row
// statistic): evaluated after the per-element ones.
inline bool is_row_output(std::string_view name) {
  return name == "finish" || name == "d_finish" || name == "d_load_finish";
}

// sum_n a[..., m, n] * b[..., n, d] over the positions where c[..., m, n] holds only (c
// undefined: all); rows of b with inf or nan never reach a position c leaves out.
at::Tensor masked_matmul(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c);

// coef * d, and 0 where coef is 0 (where nothing flows back, a derivative may be inf or nan).
inline at::Tensor chain(const at::Tensor& coef, const at::Tensor& d) {
  return at::where(coef == 0, 0.0, coef * d);
}

// Gradients of captured tensors from the outputs named `name` ("d_load", "d_load_weight", ...:
// the derivative by one load), evaluated in `values`, times `coef` (broadcastable to them).
struct LoadGradSource {
  std::string_view name;
  const std::vector<at::Tensor>* values;
  at::Tensor coef;
};

// dq, dk, dv and the captured tensors' gradients, from dS (the gradient by the raw score) and
// P (the weights V was summed with), over the positions `contrib` (undefined: all).
std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> input_grads(
    const ir::Graph& g, const at::Tensor& ds, const at::Tensor& p, const at::Tensor& contrib,
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& kf,
    const at::Tensor& d_out, const Shapes& s, double scale, const std::vector<at::Tensor>& buffers,
    const c10::List<bool>& buffer_grads, const std::vector<LoadGradSource>& sources);

}  // namespace ae::torch_ops::ref

namespace ae::torch_ops {

// Custom row normalizations (ir::Normalize::Custom): reference_forward / reference_backward
// send them here, with the same arguments and results (the row statistic in lse's place).
std::tuple<at::Tensor, at::Tensor> custom_forward(const ir::Variant& variant, const at::Tensor& q,
                                                  const at::Tensor& k, const at::Tensor& v,
                                                  const std::vector<at::Tensor>& buffers,
                                                  const Shapes& s, double scale);
std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> custom_backward(
    const ir::Variant& variant, const at::Tensor& dout, const std::optional<at::Tensor>& dstat,
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::vector<at::Tensor>& buffers, const Shapes& s, double scale,
    const c10::List<bool>& buffer_grads);

}  // namespace ae::torch_ops
