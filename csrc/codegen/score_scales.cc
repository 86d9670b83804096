#include "codegen/score_scales.h"

#include <cmath>

namespace ae::codegen {
namespace {

using ir::DType;
using ir::Graph;
using ir::Node;
using ir::Op;

// n = x * c, c * x or x / c for a finite nonzero float constant: c (1 / c for a division).
bool times_const(const Graph& g, const Node& n, int x, double* c) {
  if (n.type != DType::Float || (n.op != Op::Mul && n.op != Op::Div)) return false;
  auto constant = [&](int id, double* v) {
    const Node& k = g.nodes[id];
    if (k.op != Op::Const || k.type != DType::Float || !std::isfinite(k.fvalue) || k.fvalue == 0)
      return false;
    *v = n.op == Op::Div ? 1.0 / k.fvalue : k.fvalue;
    return std::isfinite(*v) && *v != 0;
  };
  if (n.args[0] == x) return constant(n.args[1], c);
  return n.op == Op::Mul && n.args[1] == x && constant(n.args[0], c);
}

// The one node of g that scales the score parameter by a constant (its factor in *c), when
// every use of the parameter is such a node with the factor `want` (0: any); -2 when the
// parameter is unused, -1 when it has other uses.
int score_scaler(const Graph& g, double want, double* c) {
  int param = -1;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    if (g.nodes[i].op == Op::Param && g.nodes[i].index == static_cast<int>(ir::Param::Score))
      param = static_cast<int>(i);
  if (param < 0) return -2;
  for (const ir::Output& o : g.outputs)
    if (o.node == param) return -1;
  int user = -2;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    bool uses = false;
    for (int a : n.args) uses = uses || a == param;
    if (!uses) continue;
    double f;
    if (user != -2 || !times_const(g, n, param, &f) || (want != 0 && f != want)) return -1;
    user = static_cast<int>(i);
    *c = f;
  }
  return user;
}

}  // namespace

ScoreScales find_score_scales(const ir::Variant& v) {
  ScoreScales r;
  const Graph& f = v.forward;
  const int score = f.output("score");
  if (score < 0 || !v.analysis.has_score_mod) return r;
  const Node& out = f.nodes[score];
  double c;
  if (f.normalize == ir::Normalize::Softmax && (out.op == Op::Mul || out.op == Op::Div))
    for (int x : out.args)
      if (r.out_inner < 0 && times_const(f, out, x, &c) && c > 0) r.out = c, r.out_inner = x;
  double in_f = 0, in_b = 0;
  const int nf = score_scaler(f, 0, &in_f);
  if (nf < 0 || nf == score) return r;
  const int nb = score_scaler(v.backward, in_f, &in_b);
  if (nb == -1) return r;
  r.in = in_f, r.in_fwd = nf, r.in_bw = nb;  // nb == -2: the backward reads no score
  return r;
}

}  // namespace ae::codegen
