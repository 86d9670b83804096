// A Variant: everything the engine derives from one traced definition, built once and shared
// by every call (and, later, by every kernel instantiation): the optimized forward graph,
// the graph with derivatives, and the dependence analysis. Registered under the forward
// graph's hash, which the torch ops take as their `variant` argument.
#pragma once

#include <memory>
#include <string>

#include "ir/block_mask.h"
#include "ir/graph.h"
#include "ir/passes.h"

namespace ae::ir {

struct Variant {
  std::string key;  // forward.hash()
  Graph forward;    // outputs "score" and "mask"
  Graph backward;   // forward's outputs + "d_score" + "d_load"s
  Analysis analysis;
  // The mask's conjunct kv_idx < lengths[b] (ir/length_bound.h), when it has one: the captured
  // tensor of the lengths, and this variant without that conjunct (registered too), which a
  // forward with the per-batch-lengths layout runs. -1 and null otherwise.
  int kv_lengths_buffer = -1;
  std::shared_ptr<const Variant> without_kv_lengths;
  // The mask's block-tensor lookup (ir/block_mask.h), when it has one, and this variant
  // without it (registered too): the block-state table of a call is built from the tensor
  // and that variant's table. buffer -1 and null otherwise.
  BlockMaskLookup block_mask;
  std::shared_ptr<const Variant> without_block_mask;
};

// Parses, validates and optimizes a trace, differentiates it, and registers the result.
// Registering the same definition twice returns the first Variant.
// `display`, when given, receives this trace's own optimized forward graph (its buffer names
// and source lines, which the shared Variant may not have).
std::shared_ptr<const Variant> build_variant(const std::string& trace_json,
                                             Graph* display = nullptr);
// The registered Variant, or nullptr.
std::shared_ptr<const Variant> find_variant(const std::string& key);

}  // namespace ae::ir
