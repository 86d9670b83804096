// A mask_mod's loads split by what they index with. In `doc[q_idx] == doc[kv_idx]` the first
// load depends on the query row only and the second on the key column only; evaluated per
// score, a 16 x 128 tile makes 2 loads per score (4096 per warp), where per row and per
// column it needs one per row and one per column. The templates evaluate the row terms once
// per thread row and the column terms once per thread column, and the rest of the mask
// (mask_rc) per score from them (templates/nvidia/mma_rows.h score_transform).
#pragma once

#include <vector>

#include "ir/graph.h"

namespace ae::codegen {

struct MaskSplit {
  // Integer or boolean nodes of the mask's graph that read a captured tensor and depend on the
  // query index (or on neither index) but not on the key index, whose value some node
  // depending on the key index reads (or the mask itself): computed once per row. Likewise
  // per column. Only those that mask_rc reads.
  std::vector<int> row_terms, col_terms;
  bool empty() const { return row_terms.empty() && col_terms.empty(); }
};

// The split of the graph's output `mask` (no terms where the mask reads no captured tensor).
MaskSplit split_mask(const ir::Graph& g, int mask);

}  // namespace ae::codegen
