// Custom row normalizations in the IR: parsing, the checks on what each function may read,
// and the derivatives of weight, stat and finish against central finite differences.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>

#include "ir/error.h"
#include "ir/eval.h"
#include "ir/parse.h"
#include "ir/passes.h"
#include "trace_builder.h"

using namespace ae::ir;
using ae::test::TraceBuilder;

namespace {

// weight = score * w[h] (+ a score_mod: score + 0.5), stat = |score_mod|,
// finish = g[h] / max(L, 1), over buffers w and g of 4 floats.
std::string retention_like(bool log_domain = false) {
  TraceBuilder t;
  int w = t.buffer("w", "float32", {4}, true), gb = t.buffer("g", "float32", {4}, true);
  int s = t.param("score"), h = t.param("h"), st = t.param("stat");
  int x = t.op("add", {s, t.fconst(0.5)});
  t.score(x);
  t.output("weight", t.op("mul", {x, t.load(w, {h})}));
  if (!log_domain) t.output("stat", t.op("abs", {x}));
  t.output("finish", t.op("div", {t.load(gb, {h}), t.op("max", {st, t.fconst(1.0)})}));
  t.normalize("custom");
  if (log_domain) t.flag("log_domain");
  return t.str();
}

struct Point {
  double score, stat;
  std::vector<double> w, g;
};

double output_at(const Graph& gr, const std::string& name, const Point& p) {
  double params[kNumParams] = {p.score, 0, 1, 5, 2, p.stat};
  auto load = [&](int buffer, const std::vector<int64_t>& idx) {
    return (buffer == 0 ? p.w : p.g).at(idx.at(0));
  };
  return evaluate(gr, params, load)[gr.output(name)].f;
}

TEST(IrNormalization, ParsesTheFunctionsAndFlags) {
  Graph g = parse_trace(retention_like());
  EXPECT_EQ(g.normalize, Normalize::Custom);
  EXPECT_FALSE(g.log_domain);
  for (const char* o : {"score", "weight", "stat", "finish"}) EXPECT_GE(g.output(o), 0) << o;
  EXPECT_NE(g.text().find("normalize=custom"), std::string::npos);
  // The flags are part of the identity; the passes keep them.
  Graph lg = optimize(parse_trace(retention_like(true)));
  EXPECT_TRUE(lg.log_domain);
  EXPECT_NE(lg.text().find("log_domain"), std::string::npos);
  EXPECT_NE(parse_trace(retention_like(true)).hash(), optimize(parse_trace(retention_like())).hash());
}

TEST(IrNormalization, DerivativesOfEachFunctionMatchFiniteDifferences) {
  Graph g = optimize(parse_trace(retention_like()));
  Graph d = differentiate(g);
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(-2.0, 2.0), pos(0.2, 3.0);
  const double eps = 1e-6;
  for (int k = 0; k < 20; ++k) {
    Point p{u(rng), pos(rng), {u(rng), u(rng), u(rng), u(rng)}, {u(rng), u(rng), u(rng), u(rng)}};
    if (std::fabs(p.score + 0.5) < 1e-3 || std::fabs(p.stat - 1.0) < 1e-3) continue;  // kinks
    double params[kNumParams] = {p.score, 0, 1, 5, 2, p.stat};
    auto load = [&](int buffer, const std::vector<int64_t>& idx) {
      return (buffer == 0 ? p.w : p.g).at(idx.at(0));
    };
    std::vector<Value> v = evaluate(d, params, load);
    auto fd = [&](const std::string& out, const std::function<void(Point&, double)>& nudge) {
      Point up = p, dn = p;
      nudge(up, eps);
      nudge(dn, -eps);
      return (output_at(g, out, up) - output_at(g, out, dn)) / (2 * eps);
    };
    auto by_score = [](Point& q, double e) { q.score += e; };
    auto by_stat = [](Point& q, double e) { q.stat += e; };
    EXPECT_NEAR(v[d.output("d_weight")].f, fd("weight", by_score), 1e-6);
    EXPECT_NEAR(v[d.output("d_stat")].f, fd("stat", by_score), 1e-6);
    EXPECT_NEAR(v[d.output("d_finish")].f, fd("finish", by_stat), 1e-6);
    // By the captured tensors: w[1] in weight only, g[1] in finish only (h = 1); each of the
    // functions has an output per load it reads (2).
    int checked = 0;
    for (const Output& o : d.outputs) {
      if (o.load < 0) continue;
      const int buffer = d.nodes[o.load].index;
      const char* of = o.name == "d_load_weight" ? "weight"
                       : o.name == "d_load_stat" ? "stat"
                       : o.name == "d_load_finish" ? "finish" : nullptr;
      if (!of) continue;
      double expect = fd(of, [&](Point& q, double e) { (buffer == 0 ? q.w : q.g)[1] += e; });
      EXPECT_NEAR(v[o.node].f, expect, 1e-6) << o.name << " of buffer " << buffer;
      ++checked;
    }
    EXPECT_EQ(checked, 2);
  }
}

// A trace whose custom outputs are built by `build` from (score, kv_idx, stat).
std::string with_outputs(const std::function<void(TraceBuilder&, int, int, int)>& build,
                         const std::string& normalize = "custom") {
  TraceBuilder t;
  int s = t.param("score"), kv = t.param("kv_idx"), st = t.param("stat");
  build(t, s, kv, st);
  t.normalize(normalize);
  return t.str();
}

void expect_error(const std::string& trace, const std::string& words) {
  try {
    parse_trace(trace);
    ADD_FAILURE() << "no error; expected one about: " << words;
  } catch (const GraphError& e) {
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
  }
}

TEST(IrNormalization, EachFunctionReadsOnlyWhatItMay) {
  expect_error(with_outputs([](TraceBuilder& t, int s, int kv, int st) {
                 t.output("weight", s);
                 t.output("finish", t.op("add", {st, t.cast("float", kv)}));
               }),
               "once per query row");
  expect_error(with_outputs([](TraceBuilder& t, int s, int, int st) {
                 t.output("weight", t.op("mul", {s, st}));
               }),
               "only the finish function may read");
  expect_error(with_outputs([](TraceBuilder& t, int s, int, int) {
                 t.output("stat", s);
               }),
               "needs a weight function");
  expect_error(with_outputs([](TraceBuilder& t, int s, int, int) {
                 t.output("weight", t.op("gt", {s, t.fconst(0.0)}));
               }),
               "returns a bool");
  expect_error(with_outputs([](TraceBuilder& t, int s, int, int) { t.output("weight", s); },
                            "softmax"),
               "needs normalize 'custom'");
  TraceBuilder t;
  int s = t.param("score");
  t.output("weight", s).output("stat", s).normalize("custom").flag("log_domain");
  expect_error(t.str(), "takes no stat function");
}

}  // namespace
