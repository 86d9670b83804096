#include "ir/length_bound.h"

#include <vector>

#include "ir/mask_conjunct.h"
#include "ir/passes.h"

namespace ae::ir {
namespace {

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

}  // namespace

KvLengthBound find_kv_length_bound(const Graph& g) {
  KvLengthBound found;
  find_mask_conjunct(g, use_counts(g), [&](int n) {
    if (const int buf = bound_buffer(g, n); buf >= 0) found = {buf, n};
    return found.buffer >= 0;
  });
  return found;
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
