// The conjuncts of a graph's mask: the leaves of the and-tree at its root, searched in order
// for one a test accepts (ir/length_bound.h and ir/block_mask.h each look for one they can
// move out of the per-score mask).
#pragma once

#include <functional>
#include <vector>

#include "ir/graph.h"

namespace ae::ir {

// Node n is the mods' input p.
inline bool is_param(const Graph& g, int n, Param p) {
  const Node& x = g.nodes[n];
  return x.op == Op::Param && x.index == static_cast<int>(p);
}

// How many node arguments and outputs read each node.
std::vector<int> use_counts(const Graph& g);

// The first node of the mask's and-tree (the mask itself, or an argument of an and in it,
// recursively) that `accept` accepts, or -1. Only nodes read once are followed: replacing a
// shared one would change its other readers (a score_mod reading the same comparison) too.
int find_mask_conjunct(const Graph& g, const std::vector<int>& uses,
                       const std::function<bool(int node)>& accept);

}  // namespace ae::ir
