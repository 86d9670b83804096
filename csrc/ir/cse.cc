#include <cstring>
#include <map>
#include <tuple>
#include <vector>

#include "ir/passes.h"

namespace ae::ir {
namespace {

using Key = std::tuple<int, int, std::vector<int>, uint64_t, int64_t, int>;

Key key_of(const Node& n) {
  uint64_t bits;  // compare float constants by bits, so nan == nan and -0 != 0
  std::memcpy(&bits, &n.fvalue, sizeof bits);
  return Key(static_cast<int>(n.op), static_cast<int>(n.type), n.args, bits, n.ivalue, n.index);
}

Graph rebuild(const Graph& g, const std::vector<int>& keep_or_remap_to, const std::vector<bool>& keep) {
  Graph r = g.header();
  std::vector<int> remap(g.nodes.size(), -1);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (!keep[i]) {
      remap[i] = remap[keep_or_remap_to[i]];
      continue;
    }
    Node n = g.nodes[i];
    for (int& a : n.args) a = remap[a];
    remap[i] = r.add(std::move(n));
  }
  for (Output o : g.outputs) {
    o.node = remap[o.node];
    if (o.load >= 0) o.load = remap[o.load];
    r.outputs.push_back(o);
  }
  return r;
}

}  // namespace

Graph eliminate_common(const Graph& g) {
  std::map<Key, int> seen;
  std::vector<int> canon(g.nodes.size());
  std::vector<bool> keep(g.nodes.size(), true);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    Node n = g.nodes[i];
    for (int& a : n.args) a = canon[a];
    auto [it, inserted] = seen.emplace(key_of(n), static_cast<int>(i));
    canon[i] = it->second;
    keep[i] = inserted;
  }
  // A kept node's arguments are canonical already only after remapping; rebuild does that.
  std::vector<int> to(g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) to[i] = canon[i];
  return rebuild(g, to, keep);
}

Graph eliminate_dead(const Graph& g) {
  std::vector<bool> live(g.nodes.size(), false);
  for (const Output& o : g.outputs) {
    live[o.node] = true;
    if (o.load >= 0) live[o.load] = true;
  }
  for (size_t i = g.nodes.size(); i-- > 0;)
    if (live[i])
      for (int a : g.nodes[i].args) live[a] = true;
  std::vector<int> to(g.nodes.size(), 0);
  return rebuild(g, to, live);
}

Graph optimize(const Graph& g) {
  Graph cur = g;
  for (int round = 0; round < 8; ++round) {
    Graph next = eliminate_dead(eliminate_common(fold_constants(cur)));
    if (next.text(false) == cur.text(false)) return next;
    cur = std::move(next);
  }
  return cur;
}

}  // namespace ae::ir
