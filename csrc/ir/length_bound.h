// Per-batch key lengths written as a mask: the conjunct `kv_idx < lengths[b]` of the mask
// (lengths: a 1-D int32 / int64 captured tensor indexed by b alone), as the inference entry
// points' positions rewrite writes it (python/attention_engine/positions.py) or a user's
// mask_mod may. The CUDA forward (csrc/torch/cuda_backend.cpp) plans the variant without such a
// bound on the kernels' KV layout (templates/common/kv_layout.h KvLengthsLayout): keys past a batch's length are
// then never visited, and the mask that is left is often none at all (plain decode against a
// cache), which needs no block-state pass.
#pragma once

#include "ir/graph.h"

namespace ae::ir {

struct KvLengthBound {
  int buffer = -1;  // the lengths' captured tensor; -1: the mask has no such conjunct
  int node = -1;    // the conjunct's node in the graph
};

// The first such conjunct of the graph's mask (an and-tree's leaves, in order).
KvLengthBound find_kv_length_bound(const Graph& g);

// The graph with that conjunct replaced by true, optimized (the mask reduces to the rest of the
// and-tree: the constant true where the bound was all of it). Its buffers are g's.
Graph without_kv_length_bound(const Graph& g, const KvLengthBound& bound);

}  // namespace ae::ir
