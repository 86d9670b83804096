// Block sparsity given as data, written as a mask: a lookup of a captured 4-D tensor at the
// score's block, `blocks[b, h, q_idx // BQ, kv_idx // BK]` (b or 0; h, h // G for a mask per
// KV head, or 0), found in the mask's and-tree. Two forms:
// - a bool tensor, and-ed with the rest of the mask (python/attention_engine/seer.py
//   BlockSparseAttention): a score counts where its block is kept and the rest keeps it;
// - FlexAttention's block states (python/attention_engine/_block_mask.py
//   block_mask_to_mask_mod): an int tensor of codes 0 (empty), 1 (partial), 2 (full) in
//   `(s == 2) | ((s == 1) & rest)`, as the whole mask (under an and, a full block would keep
//   scores the other conjuncts drop).
// The planner then builds the kernels' block-state table from the tensor and the rest's own
// table (cached: the rest, e.g. causal, does not change per call) instead of evaluating the
// whole mask at every score per call (templates/common/block_state.h).
#pragma once

#include "ir/graph.h"

namespace ae::ir {

struct BlockMaskLookup {
  int buffer = -1;        // the block tensor's captured index; -1: the mask has no such lookup
  int node = -1;          // the conjunct: the load (bool form) or the or (codes form)
  int rest = -1;          // codes form: what a partial block's scores and with (-1: true)
  bool codes = false;     // the codes form (else the bool form)
  int block_q = 0, block_k = 0;  // block_q 0: the index is 0, one row of blocks for all queries
  bool by_batch = false;  // indexed by b (else by 0)
  int head_div = 0;       // the head index: 0 (the constant 0), 1 (h) or G > 1 (h // G)
};

// The first such conjunct of the graph's mask (the and-tree's leaves, in order).
BlockMaskLookup find_block_mask(const Graph& g);

// The graph with that conjunct replaced by what is left of it (true for the bool form, the
// rest for the codes form), optimized: the mask the block-state table is built from beside the
// tensor. Its buffers are g's.
Graph without_block_mask(const Graph& g, const BlockMaskLookup& found);

}  // namespace ae::ir
