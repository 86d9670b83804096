// Reverse-mode symbolic differentiation of the "score" output (and of a custom
// normalization's outputs, each on its own). Adjoints are built as new nodes appended to a
// copy of the graph, then the whole graph is optimized.
#include <cmath>
#include <string>
#include <vector>

#include "ir/passes.h"

namespace ae::ir {
namespace {

class Builder {
 public:
  explicit Builder(Graph& g) : g_(g) {}
  int c(double v) { return g_.add_const(DType::Float, v); }
  int op(Op o, std::vector<int> args, DType t = DType::Float) {
    Node n;
    n.op = o;
    n.type = t;
    n.args = std::move(args);
    n.loc = loc;
    n.derived = true;
    return g_.add(std::move(n));
  }
  int mul(int a, int b) { return op(Op::Mul, {a, b}); }
  int div(int a, int b) { return op(Op::Div, {a, b}); }
  int neg(int a) { return op(Op::Neg, {a}); }
  int sub(int a, int b) { return op(Op::Sub, {a, b}); }
  int where(int cond, int a, int b) { return op(Op::Where, {cond, a, b}); }
  int cmp(Op o, int a, int b) { return op(o, {a, b}, DType::Bool); }
  int half(int a) { return mul(a, c(0.5)); }
  int to_float(int a) { return g_.nodes[a].type == DType::Float ? a : op(Op::Cast, {a}); }
  std::string loc;  // derivative nodes point at the line of the node they differentiate

 private:
  Graph& g_;
};

bool is_float(const Graph& g, int id) { return g.nodes[id].type == DType::Float; }

// Reverse mode from one output: the adjoint of every node of the first n_orig (the original
// graph's), -1 where none flows. New nodes are appended to g.
std::vector<int> adjoints(Graph& g, int seed, int n_orig) {
  std::vector<int> adj(n_orig, -1);
  Builder b(g);
  auto accumulate = [&](int target, int value) {
    if (!is_float(g, target)) return;  // ints and bools carry no derivative
    adj[target] = adj[target] < 0 ? value : b.op(Op::Add, {adj[target], value});
  };
  if (seed >= 0) adj[seed] = b.c(1.0);

  for (int i = n_orig - 1; i >= 0; --i) {
    if (adj[i] < 0) continue;
    const Node n = g.nodes[i];  // a copy: g.nodes grows below
    const int a = adj[i];
    const std::vector<int>& x = n.args;
    b.loc = n.loc;
    switch (n.op) {
      case Op::Add: accumulate(x[0], a); accumulate(x[1], a); break;
      case Op::Sub: accumulate(x[0], a); accumulate(x[1], b.neg(a)); break;
      case Op::Mul:
        accumulate(x[0], b.mul(a, b.to_float(x[1])));
        accumulate(x[1], b.mul(a, b.to_float(x[0])));
        break;
      case Op::Div: {
        int dx = b.div(a, b.to_float(x[1]));
        accumulate(x[0], dx);
        accumulate(x[1], b.neg(b.mul(dx, i)));  // d(x/y)/dy = -(x/y)/y
        break;
      }
      case Op::Neg: accumulate(x[0], b.neg(a)); break;
      case Op::Abs: accumulate(x[0], b.mul(a, b.op(Op::Sign, {x[0]}))); break;
      case Op::Exp: accumulate(x[0], b.mul(a, i)); break;
      case Op::Exp2: accumulate(x[0], b.mul(a, b.mul(i, b.c(M_LN2)))); break;
      case Op::Log: accumulate(x[0], b.div(a, x[0])); break;
      case Op::Log2: accumulate(x[0], b.div(a, b.mul(x[0], b.c(M_LN2)))); break;
      case Op::Tanh: accumulate(x[0], b.mul(a, b.sub(b.c(1.0), b.mul(i, i)))); break;
      case Op::Sigmoid: accumulate(x[0], b.mul(a, b.mul(i, b.sub(b.c(1.0), i)))); break;
      case Op::Relu: {
        int pos = b.op(Op::Gt, {x[0], b.c(0.0)}, DType::Bool);
        accumulate(x[0], b.where(pos, a, b.c(0.0)));
        break;
      }
      case Op::Sqrt: accumulate(x[0], b.div(b.mul(a, b.c(0.5)), i)); break;
      case Op::Rsqrt:  // d x^-1/2 = -1/2 x^-1/2 / x
        accumulate(x[0], b.mul(a, b.div(b.mul(b.c(-0.5), i), x[0])));
        break;
      case Op::Sin: accumulate(x[0], b.mul(a, b.op(Op::Cos, {x[0]}))); break;
      case Op::Cos: accumulate(x[0], b.neg(b.mul(a, b.op(Op::Sin, {x[0]})))); break;
      case Op::Cast: accumulate(x[0], a); break;  // float -> float only reaches here
      case Op::FloorDiv:  // piecewise constant (torch: zero gradient)
        break;
      case Op::Mod:  // torch.remainder: 1 for the dividend, -floor(x / y) for the divisor
        if (n.type != DType::Float) break;
        accumulate(x[0], a);
        accumulate(x[1], b.neg(b.mul(a, b.op(Op::FloorDiv, {x[0], x[1]}))));
        break;
      case Op::Pow: {  // torch's pow_backward: 0 where it would be 0 * inf or 0 * log(0)
        int base = b.to_float(x[0]), ex = b.to_float(x[1]);
        int pm1 = b.op(Op::Pow, {base, b.sub(ex, b.c(1.0))});
        int d_base = b.mul(a, b.mul(ex, pm1));
        accumulate(x[0], b.where(b.cmp(Op::Eq, ex, b.c(0.0)), b.c(0.0), d_base));
        if (is_float(g, x[1])) {
          int zero_base = b.op(Op::And, {b.cmp(Op::Eq, base, b.c(0.0)),
                                          b.cmp(Op::Ge, ex, b.c(0.0))}, DType::Bool);
          int d_ex = b.mul(a, b.mul(i, b.op(Op::Log, {base})));
          accumulate(x[1], b.where(zero_base, b.c(0.0), d_ex));
        }
        break;
      }
      case Op::Min:
      case Op::Max: {  // torch.maximum / minimum: a tie splits the gradient in halves
        const Op loses0 = n.op == Op::Max ? Op::Lt : Op::Gt;  // x0 is not the result
        const Op loses1 = n.op == Op::Max ? Op::Gt : Op::Lt;  // x1 is not the result
        int tie = b.cmp(Op::Eq, x[0], x[1]);
        int share = b.where(tie, b.half(a), a);
        accumulate(x[0], b.where(b.cmp(loses0, x[0], x[1]), b.c(0.0), share));
        accumulate(x[1], b.where(b.cmp(loses1, x[0], x[1]), b.c(0.0), share));
        break;
      }
      case Op::Where:
        accumulate(x[1], b.where(x[0], a, b.c(0.0)));
        accumulate(x[2], b.where(x[0], b.c(0.0), a));
        break;
      default:  // params, loads, constants, rounding, sign, comparisons, integer ops
        break;
    }
  }

  return adj;
}

}  // namespace

Graph differentiate(const Graph& src) {
  Graph g = optimize(src);
  const int n_orig = static_cast<int>(g.nodes.size());
  Builder b(g);
  auto zero_if_missing = [&](int id) { return id >= 0 ? id : b.c(0.0); };
  // Each differentiated output, the parameter it is differentiated by, and the names of the
  // results. "score" always; a custom normalization's outputs where the graph has them.
  struct Seed {
    const char* output;
    Param by;
    const char* d_name;
    const char* d_load_name;
  };
  static const Seed kSeeds[] = {{"score", Param::Score, "d_score", "d_load"},
                                {"weight", Param::Score, "d_weight", "d_load_weight"},
                                {"stat", Param::Score, "d_stat", "d_load_stat"},
                                {"finish", Param::Stat, "d_finish", "d_load_finish"}};
  std::vector<bool> reads_stat(n_orig, false);  // the node depends on the row statistic
  for (int i = 0; i < n_orig; ++i) {
    const Node& n = g.nodes[i];
    reads_stat[i] = n.op == Op::Param && n.index == static_cast<int>(Param::Stat);
    for (int a : n.args) reads_stat[i] = reads_stat[i] || reads_stat[a];
  }
  for (const Seed& seed : kSeeds) {
    const Output* o = g.find_output(seed.output);
    if (!o && std::string(seed.output) != "score") continue;
    const std::vector<int> adj = adjoints(g, o ? o->node : -1, n_orig);
    int by = -1;
    for (int i = 0; i < n_orig; ++i) {
      const Node& n = g.nodes[i];
      if (n.op == Op::Param && n.index == static_cast<int>(seed.by)) by = i;
    }
    g.outputs.push_back(Output{seed.d_name, zero_if_missing(by >= 0 ? adj[by] : -1), -1});
    const bool score_seed = seed.by == Param::Score && std::string(seed.output) == "score";
    for (int i = 0; i < n_orig; ++i) {
      const Node& n = g.nodes[i];
      if (n.op != Op::Load || n.type != DType::Float) continue;
      // "d_load" has an output per float load (0 where the score does not read it), as
      // before custom normalizations. A normalization's functions get one per load they
      // read: the per-element ones must not evaluate a load of finish's (it may be indexed
      // by the row statistic), nor finish's pass the score_mod's.
      if (score_seed ? reads_stat[i] : adj[i] < 0) continue;
      g.outputs.push_back(Output{seed.d_load_name, zero_if_missing(adj[i]), i});
    }
  }
  return optimize(g);
}

}  // namespace ae::ir
