#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "ir/error.h"
#include "ir/eval.h"
#include "ir/passes.h"

namespace ae::ir {
namespace {

bool is_const(const Graph& g, int id, double v) {
  const Node& n = g.nodes[id];
  if (n.op != Op::Const) return false;
  return n.type == DType::Float ? n.fvalue == v : static_cast<double>(n.ivalue) == v;
}

// A zero that x + zero (sign=true: -0.0) or x - zero (sign=false: +0.0) leaves x unchanged
// for every x of type t, -0.0 included (-0.0 + 0.0 is +0.0). Integer zeros are either.
bool is_neutral_zero(const Graph& g, int id, DType t, bool negative) {
  const Node& c = g.nodes[id];
  if (!is_const(g, id, 0)) return false;
  if (t != DType::Float) return true;
  if (c.type != DType::Float) return !negative;  // an int 0 becomes +0.0
  return std::signbit(c.fvalue) == negative;
}

std::string value_text(const Value& v) {
  if (v.type == DType::Float) return fmt::format("{}", v.f);
  if (v.type == DType::Bool) return v.i ? "True" : "False";
  return fmt::format("{}", v.i);
}

// "65536 * 65536", "abs(-2147483648)": an integer constant expression, for messages.
std::string expr_text(Op op, const std::vector<Value>& args) {
  static const std::pair<Op, const char*> infix[] = {
      {Op::Add, "+"}, {Op::Sub, "-"}, {Op::Mul, "*"}, {Op::FloorDiv, "//"}, {Op::Mod, "%"},
      {Op::Pow, "**"}, {Op::And, "&"}, {Op::Or, "|"}, {Op::Xor, "^"}};
  for (const auto& [o, sym] : infix)
    if (o == op && args.size() == 2)
      return fmt::format("{} {} {}", value_text(args[0]), sym, value_text(args[1]));
  std::string s = std::string(op_info(op).name) + "(";
  for (size_t i = 0; i < args.size(); ++i) s += (i ? ", " : "") + value_text(args[i]);
  return s + ")";
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
    case Op::Add:  // x + -0.0 is x; x + 0.0 is not (for x = -0.0)
      if (is_neutral_zero(g, a[1], n.type, true)) return same_type(a[0]);
      if (is_neutral_zero(g, a[0], n.type, true)) return same_type(a[1]);
      return -1;
    case Op::Sub:
      return is_neutral_zero(g, a[1], n.type, false) ? same_type(a[0]) : -1;
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
    case Op::And:  // on bools: false & x is false, true & x is x
    case Op::Or: {  // true | x is true, false | x is x
      if (n.type != DType::Bool) return -1;
      for (int k = 0; k < 2; ++k) {
        const Node& c = g.nodes[a[k]];
        if (c.op != Op::Const || g.nodes[a[1 - k]].type != DType::Bool) continue;
        const bool absorbing = (c.ivalue != 0) == (n.op == Op::Or);
        return absorbing ? a[k] : a[1 - k];
      }
      return -1;
    }
    default:
      return -1;
  }
}

// (x * c1) / c2, (x / c1) * c2, ...: x times one constant, computed in double. Autodiff
// writes such chains (softcap's derivative: cap * (1 - t^2) / cap, which then folds to
// 1 - t^2), and each link is a multiply per score in a kernel. Only for derivative nodes:
// it changes rounding (and where a link overflows, the result), which PyTorch would not, so
// the user's own arithmetic is never reassociated. False when n is no such chain.
bool reassociate(Graph& g, Node& n) {
  if (!n.derived) return false;
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
  Graph r = g.header();
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
      // Kernels compute integers in 32 bits: a folded integer must fit, as a traced
      // constant must (parse.cc), or the kernel and the reference would disagree.
      if (v.type == DType::Int && (v.i < INT32_MIN || v.i > INT32_MAX))
        throw GraphError(at_loc(fmt::format(
            "integer constant expression {} = {} does not fit in 32 bits (kernels compute "
            "integers in 32-bit ints)", expr_text(n.op, args), v.i), n.loc));
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
