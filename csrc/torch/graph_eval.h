// Evaluates an op graph with ATen over the whole score matrix at once: the indices are
// broadcast aranges ([B,1,1,1], [1,H,1,1], [1,1,Sq,1], [1,1,1,Skv]), so index-only parts
// stay small and only what touches the score is [B,H,Sq,Skv].
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <vector>

#include "ir/graph.h"

namespace ae::torch_ops {

struct EvalInputs {
  at::Tensor score;  // [B,H,Sq,Skv] in the compute dtype
  int64_t batch = 0, heads = 0, q_len = 0, kv_len = 0;
  std::vector<at::Tensor> buffers;  // the captured tensors, in the graph's order
  at::ScalarType compute = at::kFloat;
  at::Tensor stat;  // [B,H,Sq,1]: the row statistic, for a custom normalization's finish
  int64_t q_offset = 0;  // q_idx of the first query row (the reference's row chunks)
};

// One tensor per node (undefined for nodes no output needs). Float nodes are in the compute
// dtype, int nodes int64, bool nodes bool. Loads check their indices against the buffer's
// shape and name the buffer and the user's line when one is out of range.
// `only`, when given, limits the work to the outputs it accepts (the others stay undefined):
// a custom normalization's per-row outputs are evaluated once the row statistic is known.
std::vector<at::Tensor> eval_graph(
    const ir::Graph& g, const EvalInputs& in,
    const std::function<bool(const ir::Output&)>& only = nullptr);

}  // namespace ae::torch_ops
