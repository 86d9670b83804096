#include "ir/length_bound.h"

#include <vector>

#include "ir/passes.h"

namespace ae::ir {
namespace {

bool is_param(const Graph& g, int n, Param p) {
  const Node& x = g.nodes[n];
  return x.op == Op::Param && x.index == static_cast<int>(p);
}

// lengths[b]: a load of a 1-D integer buffer at the batch index.
int lengths_buffer(const Graph& g, int n) {
  const Node& x = g.nodes[n];
  if (x.op != Op::Load || x.args.size() != 1 || !is_param(g, x.args[0], Param::B)) return -1;
  const Buffer& buf = g.buffers[x.index];
  if (buf.shape.size() != 1 || (buf.torch_dtype != "int64" && buf.torch_dtype != "int32"))
    return -1;
  return x.index;
}

// Node n is kv_idx < lengths[b] (or lengths[b] > kv_idx): the buffer, else -1.
int bound_buffer(const Graph& g, int n) {
  const Node& x = g.nodes[n];
  if (x.op == Op::Lt && is_param(g, x.args[0], Param::KvIdx)) return lengths_buffer(g, x.args[1]);
  if (x.op == Op::Gt && is_param(g, x.args[1], Param::KvIdx)) return lengths_buffer(g, x.args[0]);
  return -1;
}

// uses: how many node arguments and outputs read each node. Only nodes read once (by the
// and-tree's node above them, or as the mask) are followed: replacing a shared one would change
// its other readers (a score_mod reading the same comparison) too.
KvLengthBound search(const Graph& g, const std::vector<int>& uses, int n) {
  if (uses[n] != 1) return {};
  if (const int buf = bound_buffer(g, n); buf >= 0) return {buf, n};
  const Node& x = g.nodes[n];
  if (x.op != Op::And || x.type != DType::Bool) return {};
  for (int a : x.args)
    if (KvLengthBound found = search(g, uses, a); found.buffer >= 0) return found;
  return {};
}

}  // namespace

KvLengthBound find_kv_length_bound(const Graph& g) {
  const int mask = g.output("mask");
  if (mask < 0) return {};
  std::vector<int> uses(g.nodes.size(), 0);
  for (const Node& n : g.nodes)
    for (int a : n.args) ++uses[a];
  for (const Output& o : g.outputs) ++uses[o.node];
  return search(g, uses, mask);
}

Graph without_kv_length_bound(const Graph& g, const KvLengthBound& bound) {
  Graph out = g;
  Node t;
  t.op = Op::Const;
  t.type = DType::Bool;
  t.ivalue = 1;
  out.nodes[bound.node] = t;  // a leaf now: its arguments (smaller ids) stay valid
  return optimize(out);
}

}  // namespace ae::ir
