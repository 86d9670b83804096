#include <cmath>
#include <vector>

#include "ir/eval.h"
#include "ir/passes.h"

namespace ae::ir {
namespace {

bool is_const(const Graph& g, int id, double v) {
  const Node& n = g.nodes[id];
  if (n.op != Op::Const) return false;
  return n.type == DType::Float ? n.fvalue == v : static_cast<double>(n.ivalue) == v;
}

Value const_value(const Node& n) {
  Value v;
  v.type = n.type;
  v.f = n.fvalue;
  v.i = n.ivalue;
  return v;
}

// An identity that makes node n equal to one of its arguments (same type), or -1.
int simplify(const Graph& g, const Node& n) {
  auto same_type = [&](int a) { return g.nodes[a].type == n.type ? a : -1; };
  const std::vector<int>& a = n.args;
  switch (n.op) {
    case Op::Add:
      if (is_const(g, a[1], 0)) return same_type(a[0]);
      if (is_const(g, a[0], 0)) return same_type(a[1]);
      return -1;
    case Op::Sub:
      return is_const(g, a[1], 0) ? same_type(a[0]) : -1;
    case Op::Mul:
      if (is_const(g, a[1], 1)) return same_type(a[0]);
      if (is_const(g, a[0], 1)) return same_type(a[1]);
      return -1;
    case Op::Div:
      return is_const(g, a[1], 1) ? same_type(a[0]) : -1;
    case Op::Neg: {
      const Node& x = g.nodes[a[0]];
      return x.op == Op::Neg ? same_type(x.args[0]) : -1;
    }
    case Op::Cast:
      return same_type(a[0]);
    case Op::Where: {
      const Node& c = g.nodes[a[0]];
      if (c.op == Op::Const) return same_type(c.ivalue ? a[1] : a[2]);
      return a[1] == a[2] ? same_type(a[1]) : -1;
    }
    default:
      return -1;
  }
}

}  // namespace

Graph fold_constants(const Graph& g) {
  Graph r;
  r.buffers = g.buffers;
  r.normalize = g.normalize;
  std::vector<int> remap(g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    Node n = g.nodes[i];
    for (int& a : n.args) a = remap[a];
    const OpInfo& info = op_info(n.op);
    bool all_const = info.arity > 0;
    for (int a : n.args) all_const = all_const && r.nodes[a].op == Op::Const;
    Value v;
    std::vector<Value> args;
    for (int a : n.args) args.push_back(const_value(r.nodes[a]));
    if (all_const && apply_op(n, args, &v)) {
      Node c;
      c.op = Op::Const;
      c.type = n.type;
      c.fvalue = v.f;
      c.ivalue = v.i;
      c.loc = n.loc;
      remap[i] = r.add(std::move(c));
      continue;
    }
    int same = info.arity > 0 ? simplify(r, n) : -1;
    remap[i] = same >= 0 ? same : r.add(std::move(n));
  }
  for (Output o : g.outputs) {
    o.node = remap[o.node];
    if (o.load >= 0) o.load = remap[o.load];
    r.outputs.push_back(o);
  }
  return r;
}

}  // namespace ae::ir
