#include "codegen/score_scales.h"

#include <cmath>

#include "ir/passes.h"

namespace ae::codegen {
namespace {

using ir::Graph;
using ir::Node;
using ir::Op;

// n = x * c, c * x or x / c for a constant c (ir::constant_factor): the factor, or false.
bool times_const(const Graph& g, const Node& n, int x, double* c) {
  int y;
  double num, den;
  if (!ir::constant_factor(g, n, &y, &num, &den) || y != x) return false;
  *c = num / den;
  return std::isfinite(*c) && *c != 0;
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
  int x;
  double num, den;
  if (f.normalize == ir::Normalize::Softmax && ir::constant_factor(f, out, &x, &num, &den) &&
      num / den > 0 && std::isfinite(num / den))
    r.out = num / den, r.out_inner = x;
  double in_f = 0, in_b = 0;
  const int nf = score_scaler(f, 0, &in_f);
  if (nf < 0 || nf == score) return r;
  const int nb = score_scaler(v.backward, in_f, &in_b);
  if (nb == -1) return r;
  r.in = in_f, r.in_fwd = nf, r.in_bw = nb;  // nb == -2: the backward reads no score
  return r;
}

}  // namespace ae::codegen
