// Graph passes. Each takes a graph and returns a new one with the same outputs; node ids
// change, outputs (and their `load` references) are remapped.
#pragma once

#include <cstdint>
#include <string>

#include "ir/graph.h"

namespace ae::ir {

// Evaluates nodes whose arguments are all constants (with PyTorch's float64 / int64 semantics,
// see eval.h; a folded integer must fit in 32 bits, else GraphError), and simplifies
// identities that hold for every value in IEEE arithmetic (x + -0.0, x - 0.0, x * 1, x / 1,
// --x, where on a constant, a cast to the same type, false & x, true | x). Never folds x + 0.0
// (-0.0 + 0.0 is +0.0) or x * 0 (inf * 0 is nan). Reassociates constant factors
// ((x * c1) / c2 -> x * (c1 / c2)) in derivative nodes only (Node::derived).
Graph fold_constants(const Graph& g);
// Whether n is x * c, c * x or x / c for a float x and a finite nonzero float constant c:
// then x's node, and the factor as the fraction num / den (kept apart, so that chains fold
// exactly: 30 / 30 is 1).
bool constant_factor(const Graph& g, const Node& n, int* x, double* num, double* den);
// Merges nodes that compute the same thing (common subexpression elimination).
Graph eliminate_common(const Graph& g);
// Drops nodes no output reaches.
Graph eliminate_dead(const Graph& g);
// fold, CSE, dead-code elimination, repeated until nothing changes.
Graph optimize(const Graph& g);

// Which of the inputs each node depends on.
enum DepBits : uint32_t {
  kDepScore = 1u << 0,
  kDepB = 1u << 1,
  kDepH = 1u << 2,
  kDepQ = 1u << 3,
  kDepKv = 1u << 4,
  kDepStat = 1u << 5,    // the row statistic (a custom normalization's finish)
  kDepBuffer = 1u << 6,  // reads a captured tensor
};
uint32_t param_dep(Param p);
std::string deps_text(uint32_t deps);

struct Analysis {
  std::vector<uint32_t> deps;  // per node
  uint32_t score_deps = 0;     // of the "score" output (0 when there is no score_mod)
  uint32_t mask_deps = 0;      // of the "mask" output
  bool has_score_mod = false;  // "score" is not just the score parameter
  bool has_mask = false;       // "mask" is not the constant true
  // The additive part of the score_mod that does not depend on the score is index-only, and
  // the mask depends on indices (and captured tensors) only: it can become block sparsity.
  bool mask_is_index_only = true;
  bool mask_uses_batch_or_head = false;
  // The score_mod reads captured tensors and the graph has a load whose index varies with
  // q_idx or kv_idx (one load per score, e.g. a relative-bias table; a per-head ALiBi slope
  // is not). Such loads need registers in flight: the tile tables pick smaller tiles.
  bool score_loads_per_element = false;
  bool mask_loads_per_element = false;  // the mask_mod loads a captured tensor at q_idx / kv_idx
  // The score_mod raises to a power that is not a constant (an inline exp2 / log2 with C's
  // special cases per score: registers the widest tiles do not have).
  bool score_pow = false;
  // The score_mod computes a special function per score (exp, log, tanh, sigmoid, sqrt, sin,
  // cos, pow, a division by a non-constant): work on the units the softmax's exp2 uses.
  bool score_special = false;
  // A constant infinity in the graph (a score_mod writing -inf): such a mod can mask scores
  // of any block (templates/nvidia/exact_pv.h).
  bool writes_infinity = false;
  std::string text() const;
};
Analysis analyze(const Graph& g);
bool has_infinite_constant(const Graph& g);

// Appends derivatives of the "score" output: "d_score" (by the score parameter) and one
// "d_load" output per float Load node (by the loaded value), then optimizes. A custom
// normalization's outputs are differentiated the same way, each on its own: "weight" and
// "stat" by the score parameter (through the score_mod: "d_weight", "d_stat") and "finish" by
// the row statistic ("d_finish"), with their loads' derivatives as "d_load_weight",
// "d_load_stat" and "d_load_finish". PyTorch's
// autograd conventions: ops without a derivative (comparisons, rounding, integer ops, floor
// division) contribute zero, remainder passes the gradient to its dividend, ties of
// maximum / minimum split it, and pow gives 0 where its formula would be 0 * inf or
// 0 * log(0) (exponent 0; base 0 with exponent >= 0).
Graph differentiate(const Graph& g);

}  // namespace ae::ir
