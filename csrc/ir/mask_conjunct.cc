#include "ir/mask_conjunct.h"

namespace ae::ir {
namespace {

int search(const Graph& g, const std::vector<int>& uses, int n,
           const std::function<bool(int)>& accept) {
  if (uses[n] != 1) return -1;
  if (accept(n)) return n;
  const Node& x = g.nodes[n];
  if (x.op != Op::And || x.type != DType::Bool) return -1;
  for (int a : x.args)
    if (const int found = search(g, uses, a, accept); found >= 0) return found;
  return -1;
}

}  // namespace

std::vector<int> use_counts(const Graph& g) {
  std::vector<int> uses(g.nodes.size(), 0);
  for (const Node& n : g.nodes)
    for (int a : n.args) ++uses[a];
  for (const Output& o : g.outputs) ++uses[o.node];
  return uses;
}

int find_mask_conjunct(const Graph& g, const std::vector<int>& uses,
                       const std::function<bool(int)>& accept) {
  const int mask = g.output("mask");
  return mask < 0 ? -1 : search(g, uses, mask, accept);
}

}  // namespace ae::ir
