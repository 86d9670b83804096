// Symbolic derivatives checked against central finite differences at random points.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "ir/eval.h"
#include "ir/parse.h"
#include "ir/passes.h"
#include "trace_builder.h"

using namespace ae::ir;
using ae::test::TraceBuilder;

namespace {

// Evaluates "score" of g at (score, b, h, q, kv) with buffer 0 = values.
double score_at(const Graph& g, double score, const std::vector<double>& buf, int h = 1,
                int q = 5, int kv = 2) {
  double p[kNumParams] = {score, 0, double(h), double(q), double(kv)};
  auto load = [&](int, const std::vector<int64_t>& idx) { return buf.at(idx.empty() ? 0 : idx[0]); };
  return evaluate(g, p, load)[g.output("score")].f;
}

// Checks d_score and every d_load of differentiate(g) against finite differences.
void check_gradients(const std::string& trace, double lo, double hi, int points = 25) {
  Graph g = optimize(parse_trace(trace));
  Graph d = differentiate(g);
  std::mt19937 rng(1234);
  std::uniform_real_distribution<double> u(lo, hi);
  for (int k = 0; k < points; ++k) {
    double s = u(rng);
    std::vector<double> buf = {u(rng), u(rng), u(rng), u(rng)};
    double p[kNumParams] = {s, 0, 1, 5, 2};
    auto load = [&](int, const std::vector<int64_t>& idx) { return buf.at(idx.empty() ? 0 : idx[0]); };
    std::vector<Value> v = evaluate(d, p, load);
    const double eps = 1e-6;
    double fd = (score_at(g, s + eps, buf) - score_at(g, s - eps, buf)) / (2 * eps);
    double an = v[d.output("d_score")].f;
    EXPECT_NEAR(an, fd, 1e-5 * std::max(1.0, std::fabs(fd))) << "d_score at score=" << s;
    // Loads that read the same element add up, as the executor's scatter-add does.
    std::vector<double> grad(buf.size(), 0.0);
    for (const Output& o : d.outputs) {
      if (o.name != "d_load") continue;
      const Node& ld = d.nodes[o.load];
      grad.at(ld.args.empty() ? 0 : v[ld.args[0]].i) += v[o.node].f;
    }
    for (size_t idx = 0; idx < buf.size(); ++idx) {
      std::vector<double> up = buf, dn = buf;
      up[idx] += eps;
      dn[idx] -= eps;
      double fdl = (score_at(g, s, up) - score_at(g, s, dn)) / (2 * eps);
      EXPECT_NEAR(grad[idx], fdl, 1e-5 * std::max(1.0, std::fabs(fdl))) << "d buf[" << idx << "] at " << s;
    }
  }
}

// f(score) for a unary op name.
std::string unary(const std::string& op) {
  TraceBuilder t;
  int s = t.param("score");
  t.score(t.op(op, {s}));
  return t.str();
}

TEST(Autodiff, UnaryOps) {
  for (const char* op : {"exp", "exp2", "tanh", "sigmoid", "sin", "cos", "neg", "abs", "relu"})
    check_gradients(unary(op), -3, 3);
  for (const char* op : {"log", "log2", "sqrt", "rsqrt"}) check_gradients(unary(op), 0.2, 4);
}

TEST(Autodiff, RoundingHasZeroDerivative) {
  for (const char* op : {"floor", "ceil", "trunc", "round", "sign"}) {
    Graph d = differentiate(optimize(parse_trace(unary(op))));
    const Node& ds = d.nodes[d.output("d_score")];
    EXPECT_EQ(ds.op, Op::Const) << op;
    EXPECT_EQ(ds.fvalue, 0.0) << op;
  }
}

TEST(Autodiff, SoftcapWithBias) {
  TraceBuilder t;
  int bias = t.buffer("bias", "float32", {4}, true);
  int s = t.param("score"), h = t.param("h");
  int capped = t.op("mul", {t.op("tanh", {t.op("div", {s, t.fconst(3.0)})}), t.fconst(3.0)});
  t.score(t.op("add", {capped, t.load(bias, {h})}));
  check_gradients(t.str(), -5, 5);
}

TEST(Autodiff, ProductQuotientPowerMinMaxWhere) {
  TraceBuilder t;
  int b = t.buffer("w", "float32", {4}, true);
  int s = t.param("score"), h = t.param("h"), q = t.param("q_idx"), kv = t.param("kv_idx");
  int w = t.load(b, {h});
  int wq = t.load(b, {t.op("mod", {q, t.iconst(4)})});
  int x = t.op("div", {t.op("mul", {s, w}), t.op("add", {wq, t.fconst(10.0)})});
  int p = t.op("pow", {x, t.fconst(2.0)});
  int m = t.op("max", {p, t.op("min", {s, wq})});
  int pw = t.op("pow", {t.fconst(2.0), t.op("mul", {s, t.fconst(0.3)})});  // const ** score
  int c = t.op("where", {t.op("gt", {q, kv}), m, t.op("mul", {s, t.cast("float", q)})});
  t.score(t.op("add", {c, pw}));
  check_gradients(t.str(), -2, 2);
}

TEST(Autodiff, SigmoidAttentionBiasAndAlibi) {
  TraceBuilder t;
  int slopes = t.buffer("slopes", "float32", {4}, true);
  int s = t.param("score"), h = t.param("h"), q = t.param("q_idx"), kv = t.param("kv_idx");
  int dist = t.cast("float", t.op("sub", {kv, q}));
  int alibi = t.op("add", {s, t.op("mul", {t.load(slopes, {h}), dist})});
  t.score(t.op("sigmoid", {t.op("sub", {alibi, t.fconst(1.5)})}));
  t.normalize("none");
  check_gradients(t.str(), -4, 4);
}

TEST(Autodiff, ScoreIndependentModHasZeroScoreDerivative) {
  TraceBuilder t;
  int q = t.param("q_idx");
  t.score(t.cast("float", q));
  Graph d = differentiate(optimize(parse_trace(t.str())));
  const Node& ds = d.nodes[d.output("d_score")];
  EXPECT_EQ(ds.op, Op::Const);
  EXPECT_EQ(ds.fvalue, 0.0);
}

TEST(Autodiff, IdentityHasUnitDerivative) {
  TraceBuilder t;
  t.score(t.param("score"));
  Graph d = differentiate(optimize(parse_trace(t.str())));
  const Node& ds = d.nodes[d.output("d_score")];
  EXPECT_EQ(ds.op, Op::Const);
  EXPECT_EQ(ds.fvalue, 1.0);
}

}  // namespace
