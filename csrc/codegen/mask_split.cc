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
  for (size_t i = 0; i < n; ++i) {
    if (!need[i] || !loads[i]) continue;
    const int id = static_cast<int>(i);
    if (!(dep[i] & kK) && (user_dep[i] & kK)) out.row_terms.push_back(id);
    else if (dep[i] == kK && (user_dep[i] & kQ)) out.col_terms.push_back(id);
  }
  return out;
}

}  // namespace ae::codegen
