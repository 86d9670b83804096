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

// (x * c1) / c2, (x / c1) * c2, ...: x times one constant, computed in double. Autodiff
// writes such chains (softcap's derivative: cap * (1 - t^2) / cap, which then folds to
// 1 - t^2), and each link is a multiply per score in a kernel. Changes the result by float
// rounding only. False when n is no such chain.
bool reassociate(Graph& g, Node& n) {
  int x, y;
  double n1, d1, n2, d2;
  if (!constant_factor(g, n, &x, &n1, &d1) || !constant_factor(g, g.nodes[x], &y, &n2, &d2))
    return false;
  const double f = (n1 * n2) / (d1 * d2);
  const float f32 = static_cast<float>(f);  // kernels multiply in float
  if (!std::isfinite(f32) || std::fabs(f32) < 1.17549435e-38f) return false;
  n.op = Op::Mul;
  n.args = {y, g.add_const(DType::Float, f)};
  return true;
}

}  // namespace

bool constant_factor(const Graph& g, const Node& n, int* x, double* num, double* den) {
  if (n.type != DType::Float || (n.op != Op::Mul && n.op != Op::Div)) return false;
  auto factor = [&](int id, double* v) {
    const Node& c = g.nodes[id];
    if (c.op != Op::Const || c.type != DType::Float || !std::isfinite(c.fvalue) || c.fvalue == 0)
      return false;
    *v = c.fvalue;
    return true;
  };
  double c;
  const int a = n.args[0], b = n.args[1];
  if (factor(b, &c) && g.nodes[a].type == DType::Float) {
    *x = a;
    *num = n.op == Op::Mul ? c : 1.0;
    *den = n.op == Op::Mul ? 1.0 : c;
    return true;
  }
  if (n.op == Op::Mul && factor(a, &c) && g.nodes[b].type == DType::Float) {
    *x = b, *num = c, *den = 1.0;
    return true;
  }
  return false;
}

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
    reassociate(r, n);  // n's arguments are folded already: one step collapses a chain
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
