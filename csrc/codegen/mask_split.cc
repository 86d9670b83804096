#include "codegen/mask_split.h"

#include <cstdint>

namespace ae::codegen {

using ir::Graph;
using ir::Node;
using ir::Op;

MaskSplit split_mask(const Graph& g, int mask) {
  MaskSplit out;
  if (mask < 0) return out;
  const size_t n = g.nodes.size();
  std::vector<bool> need(n, false);
  need[mask] = true;
  for (size_t i = n; i-- > 0;)
    if (need[i])
      for (int a : g.nodes[i].args) need[a] = true;
  enum : uint8_t { kQ = 1, kK = 2 };
  std::vector<uint8_t> dep(n, 0);
  std::vector<bool> loads(n, false);
  for (size_t i = 0; i < n; ++i) {  // args come before their users (graph order)
    if (!need[i]) continue;
    const Node& nd = g.nodes[i];
    if (nd.op == Op::Param) {
      if (nd.index == static_cast<int>(ir::Param::QIdx)) dep[i] = kQ;
      if (nd.index == static_cast<int>(ir::Param::KvIdx)) dep[i] = kK;
    }
    loads[i] = nd.op == Op::Load;
    for (int a : nd.args) {
      dep[i] |= dep[a];
      loads[i] = loads[i] || loads[a];
    }
  }
  // What each node's users (within the mask) depend on, and the mask's own value counted
  // as a user that depends on both.
  std::vector<uint8_t> user_dep(n, 0);
  user_dep[mask] = kQ | kK;
  for (size_t i = 0; i < n; ++i)
    if (need[i])
      for (int a : g.nodes[i].args) user_dep[a] |= dep[i];
  // Candidates: integer and boolean values only (a float term, reused by many scores, could
  // round differently from the mask computed per score, where ptxas may fuse it into an FMA;
  // mask() still serves the block-state kernel and the sm80 backward).
  std::vector<uint8_t> term(n, 0);  // kQ: a row term, kK: a column term
  for (size_t i = 0; i < n; ++i) {
    if (!need[i] || !loads[i] || g.nodes[i].type == ir::DType::Float) continue;
    if (!(dep[i] & kK) && (user_dep[i] & kK)) term[i] = kQ;
    else if (dep[i] == kK && (user_dep[i] & kQ)) term[i] = kK;
  }
  // Only the terms mask_rc reads: the mask's inputs, not going past a term (a per-head load
  // used only inside a column term is that term's business, not a row term of its own).
  std::vector<bool> reached(n, false);
  reached[mask] = true;
  for (size_t i = n; i-- > 0;)
    if (reached[i] && !term[i])
      for (int a : g.nodes[i].args) reached[a] = true;
  for (size_t i = 0; i < n; ++i) {
    if (!reached[i]) continue;
    if (term[i] == kQ) out.row_terms.push_back(static_cast<int>(i));
    if (term[i] == kK) out.col_terms.push_back(static_cast<int>(i));
  }
  return out;
}

}  // namespace ae::codegen
