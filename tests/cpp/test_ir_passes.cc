// Folding, CSE, dead code, analysis, text form and hash.
#include <gtest/gtest.h>

#include "ir/error.h"
#include "ir/eval.h"
#include "ir/parse.h"
#include "ir/passes.h"
#include "ir/variant.h"
#include "trace_builder.h"

using namespace ae::ir;
using ae::test::TraceBuilder;

namespace {

int count_op(const Graph& g, Op op) {
  int n = 0;
  for (const Node& x : g.nodes) n += x.op == op;
  return n;
}

TEST(Fold, ConstantArithmeticFolds) {
  TraceBuilder t;
  int s = t.param("score");
  int c = t.op("mul", {t.fconst(2.0), t.op("add", {t.fconst(1.0), t.fconst(0.5)})});  // 3.0
  t.score(t.op("mul", {s, c}));
  Graph g = optimize(parse_trace(t.str()));
  EXPECT_EQ(count_op(g, Op::Add), 0);
  ASSERT_EQ(count_op(g, Op::Mul), 1);
  const Node& mul = g.nodes[g.output("score")];
  EXPECT_EQ(g.nodes[mul.args[1]].fvalue, 3.0);
}

TEST(Fold, IdentitiesAndWhereOnConstant) {
  TraceBuilder t;
  int s = t.param("score");
  // (x + 0.0 is no identity: -0.0 + 0.0 is +0.0; x - 0.0 is)
  int x = t.op("sub", {t.op("mul", {s, t.fconst(1.0)}), t.fconst(0.0)});
  int w = t.op("where", {t.bconst(true), x, t.fconst(5.0)});
  t.score(t.op("neg", {t.op("neg", {w})}));
  Graph g = optimize(parse_trace(t.str()));
  // everything collapses to the score parameter itself
  const Node& out = g.nodes[g.output("score")];
  EXPECT_EQ(out.op, Op::Param);
  EXPECT_EQ(g.nodes.size(), 1u);
}

// The nodes `root` depends on.
std::vector<bool> reachable(const Graph& g, int root) {
  std::vector<bool> r(g.nodes.size(), false);
  r[root] = true;
  for (size_t i = g.nodes.size(); i-- > 0;)
    if (r[i])
      for (int a : g.nodes[i].args) r[a] = true;
  return r;
}

TEST(Fold, ConstantFactorChainsCollapseInDerivativesOnly) {
  TraceBuilder t;
  int s = t.param("score");
  // (cap * x) / cap: what the user wrote stays (PyTorch rounds each step)...
  int x = t.op("tanh", {s});
  int a = t.op("div", {t.op("mul", {t.fconst(30.0), x}), t.fconst(30.0)});
  int b = t.op("mul", {t.op("div", {t.op("mul", {s, t.fconst(2.0)}), t.fconst(8.0)}), t.fconst(3.0)});
  t.score(t.op("add", {a, b}));
  Graph g = optimize(parse_trace(t.str()));
  EXPECT_EQ(count_op(g, Op::Div), 2);
  EXPECT_EQ(count_op(g, Op::Mul), 3);
  // ...and its derivative, cap * (1 - t^2) / cap + 2 / 8 * 3, has no factor chain left:
  // 1 - t^2 + 0.75, one multiply (t * t) and no division
  Graph d = differentiate(g);
  std::vector<bool> r = reachable(d, d.output("d_score"));
  int muls = 0, divs = 0;
  for (size_t i = 0; i < d.nodes.size(); ++i) {
    muls += r[i] && d.nodes[i].op == Op::Mul;
    divs += r[i] && d.nodes[i].op == Op::Div;
  }
  EXPECT_EQ(divs, 0);
  EXPECT_EQ(muls, 1);
}

TEST(Fold, ConstantFactorsStayApartWhereFloatCannotHoldTheProduct) {
  TraceBuilder t;
  int s = t.param("score");
  t.score(t.op("mul", {t.op("mul", {s, t.fconst(1e30)}), t.fconst(1e30)}));
  Graph g = optimize(parse_trace(t.str()));
  EXPECT_EQ(count_op(g, Op::Mul), 2);
}

TEST(Fold, NeverFoldsTimesZero) {
  TraceBuilder t;
  int s = t.param("score");
  t.score(t.op("mul", {s, t.fconst(0.0)}));  // inf * 0 must stay nan
  Graph g = optimize(parse_trace(t.str()));
  EXPECT_EQ(count_op(g, Op::Mul), 1);
}

TEST(Fold, IntegerSemanticsMatchPyTorch) {
  TraceBuilder t;
  int fd = t.op("floordiv", {t.iconst(-7), t.iconst(2)});  // -4
  int md = t.op("mod", {t.iconst(-7), t.iconst(3)});       // 2
  int rd = t.op("round", {t.fconst(2.5)});                 // 2 (half to even)
  int q = t.param("q_idx");
  int sum = t.op("add", {t.op("add", {fd, md}), q});
  t.score(t.op("add", {t.cast("float", sum), rd}));
  Graph g = optimize(parse_trace(t.str()));
  double params[kNumParams] = {0, 0, 0, 10, 0};
  auto v = evaluate(g, params, nullptr);
  EXPECT_DOUBLE_EQ(v[g.output("score")].f, -4 + 2 + 10 + 2.0);
}

TEST(Fold, DivisionByZeroLeftForRunTime) {
  TraceBuilder t;
  int q = t.param("q_idx");
  int d = t.op("floordiv", {t.iconst(1), t.iconst(0)});
  t.score(t.op("add", {q, d}));
  Graph g = optimize(parse_trace(t.str()));
  EXPECT_EQ(count_op(g, Op::FloorDiv), 1);
}

TEST(Cse, MergesRepeatedSubexpressions) {
  TraceBuilder t;
  int doc = t.buffer("doc", "int64", {64});
  int q = t.param("q_idx"), kv = t.param("kv_idx");
  int a = t.op("sub", {q, kv});
  int b = t.op("sub", {q, kv});
  int l1 = t.load(doc, {q});
  int l2 = t.load(doc, {q});
  int s = t.param("score");
  t.score(t.op("add", {s, t.cast("float", t.op("mul", {a, b}))}));
  t.mask(t.op("eq", {l1, l2}));
  Graph g = optimize(parse_trace(t.str()));
  EXPECT_EQ(count_op(g, Op::Sub), 1);
  // doc[q] == doc[q] became one load compared with itself
  EXPECT_EQ(count_op(g, Op::Load), 1);
}

TEST(Dce, DropsUnusedNodes) {
  TraceBuilder t;
  int s = t.param("score");
  t.op("exp", {s});  // never used
  t.score(t.op("tanh", {s}));
  Graph g = optimize(parse_trace(t.str()));
  EXPECT_EQ(count_op(g, Op::Exp), 0);
  EXPECT_EQ(g.nodes.size(), 2u);
}

TEST(Analysis, DependenceOfScoreAndMask) {
  TraceBuilder t;
  int slopes = t.buffer("slopes", "float32", {8});
  int s = t.param("score"), h = t.param("h"), q = t.param("q_idx"), kv = t.param("kv_idx");
  t.score(t.op("add", {s, t.load(slopes, {h})}));
  t.mask(t.op("ge", {q, kv}));
  Analysis a = analyze(optimize(parse_trace(t.str())));
  EXPECT_EQ(a.score_deps, kDepScore | kDepH | kDepBuffer);
  EXPECT_EQ(a.mask_deps, kDepQ | kDepKv);
  EXPECT_TRUE(a.has_score_mod);
  EXPECT_TRUE(a.has_mask);
  EXPECT_TRUE(a.mask_is_index_only);
  EXPECT_FALSE(a.mask_uses_batch_or_head);
  EXPECT_NE(a.text().find("index-only"), std::string::npos);
  EXPECT_FALSE(a.score_loads_per_element);  // slopes[h]: one load per row, not per score
  EXPECT_FALSE(a.mask_loads_per_element);
}

TEST(Analysis, LoadsPerScore) {
  // A document mask: doc[q_idx] == doc[kv_idx] loads per score; the score_mod does not.
  TraceBuilder t;
  int doc = t.buffer("doc", "int32", {64});
  int s = t.param("score"), q = t.param("q_idx"), kv = t.param("kv_idx");
  t.score(t.op("mul", {s, t.fconst(0.5)}));
  t.mask(t.op("eq", {t.load(doc, {q}), t.load(doc, {kv})}));
  Analysis a = analyze(optimize(parse_trace(t.str())));
  EXPECT_TRUE(a.mask_loads_per_element);
  EXPECT_FALSE(a.score_loads_per_element);
  // A causal mask beside a score_mod that loads per score: the mask loads nothing.
  TraceBuilder u;
  int bias = u.buffer("bias", "float32", {64});
  int s2 = u.param("score"), q2 = u.param("q_idx"), kv2 = u.param("kv_idx");
  u.score(u.op("add", {s2, u.load(bias, {u.op("sub", {q2, kv2})})}));
  u.mask(u.op("ge", {q2, kv2}));
  Analysis c = analyze(optimize(parse_trace(u.str())));
  EXPECT_TRUE(c.score_loads_per_element);
  EXPECT_FALSE(c.mask_loads_per_element);
}

TEST(Analysis, ScorePow) {
  // gamma[h] ** (q_idx - kv_idx): a pow of a non-constant exponent; s ** 2 is a product.
  TraceBuilder t;
  int gamma = t.buffer("gamma", "float32", {4});
  int s = t.param("score"), h = t.param("h"), q = t.param("q_idx"), kv = t.param("kv_idx");
  t.score(t.op("mul", {s, t.op("pow", {t.load(gamma, {h}), t.op("sub", {q, kv})})}));
  t.mask(t.op("ge", {q, kv}));
  EXPECT_TRUE(analyze(optimize(parse_trace(t.str()))).score_pow);
  TraceBuilder u;
  int s2 = u.param("score");
  u.score(u.op("pow", {s2, u.fconst(2.0)}));
  u.mask(u.bconst(true));
  EXPECT_FALSE(analyze(optimize(parse_trace(u.str()))).score_pow);
  // a pow in the mask only does not count
  TraceBuilder w;
  int s3 = w.param("score"), q3 = w.param("q_idx"), kv3 = w.param("kv_idx");
  w.score(w.op("mul", {s3, w.fconst(0.5)}));
  w.mask(w.op("lt", {w.op("pow", {w.op("sub", {q3, kv3}), kv3}), q3}));
  EXPECT_FALSE(analyze(optimize(parse_trace(w.str()))).score_pow);
}

TEST(Analysis, ScoreSpecial) {
  // softcap: tanh(score / 30) * 30 computes a special function per score
  TraceBuilder t;
  int s = t.param("score");
  t.score(t.op("mul", {t.op("tanh", {t.op("div", {s, t.fconst(30.0)})}), t.fconst(30.0)}));
  t.mask(t.bconst(true));
  EXPECT_TRUE(analyze(optimize(parse_trace(t.str()))).score_special);
  // ALiBi: slope[h] * (kv_idx - q_idx), no special function
  TraceBuilder u;
  int slope = u.buffer("slope", "float32", {4});
  int s2 = u.param("score"), h = u.param("h"), q = u.param("q_idx"), kv = u.param("kv_idx");
  u.score(u.op("add", {s2, u.op("mul", {u.load(slope, {h}), u.op("sub", {kv, q})})}));
  u.mask(u.bconst(true));
  EXPECT_FALSE(analyze(optimize(parse_trace(u.str()))).score_special);
  // a per-head temperature: a division of the score by a non-constant
  TraceBuilder w;
  int temp = w.buffer("temp", "float32", {4});
  int s3 = w.param("score"), h3 = w.param("h");
  w.score(w.op("div", {s3, w.load(temp, {h3})}));
  w.mask(w.bconst(true));
  EXPECT_TRUE(analyze(optimize(parse_trace(w.str()))).score_special);
  // a special function of the head only is not one per score
  TraceBuilder x;
  int bias = x.buffer("bias", "float32", {4});
  int s4 = x.param("score"), h4 = x.param("h");
  x.score(x.op("add", {s4, x.op("exp", {x.load(bias, {h4})})}));
  x.mask(x.bconst(true));
  EXPECT_FALSE(analyze(optimize(parse_trace(x.str()))).score_special);
}

TEST(Analysis, IdentityAndNoMask) {
  TraceBuilder t;
  t.score(t.param("score"));
  t.mask(t.bconst(true));
  Analysis a = analyze(optimize(parse_trace(t.str())));
  EXPECT_FALSE(a.has_score_mod);
  EXPECT_FALSE(a.has_mask);
}

std::string softcap_trace(const std::string& loc, const std::string& bufname) {
  TraceBuilder t;
  int bias = t.buffer(bufname, "float32", {4});
  int s = t.param("score"), h = t.param("h");
  int capped = t.op("mul", {t.op("tanh", {t.op("div", {s, t.fconst(30.0)})}), t.fconst(30.0)}, loc);
  t.score(t.op("add", {capped, t.load(bias, {h})}));
  return t.str();
}

TEST(Text, StableFormAndGolden) {
  Graph g = optimize(parse_trace(softcap_trace("mod.py:4: return cap * tanh(score / cap)", "bias")));
  const std::string expected =
      "graph normalize=softmax\n"
      "buffer $0: float rank 1\n"
      "%0 = param score : float\n"
      "%1 = param h : int\n"
      "%2 = const 30 : float\n"
      "%3 = div %0, %2 : float\n"
      "%4 = tanh %3 : float\n"
      "%5 = mul %4, %2 : float\n"
      "%6 = load $0[ %1 ] : float\n"
      "%7 = add %5, %6 : float\n"
      "out score = %7\n";
  EXPECT_EQ(g.text(false), expected);
  EXPECT_NE(g.text(true).find("# mod.py:4"), std::string::npos);
  EXPECT_NE(g.text(true).find("float32[4] \"bias\""), std::string::npos);
}

TEST(Hash, IgnoresLinesAndNamesButNotMath) {
  std::string h1 = optimize(parse_trace(softcap_trace("a.py:1: x", "bias"))).hash();
  std::string h2 = optimize(parse_trace(softcap_trace("b.py:99: y", "other"))).hash();
  EXPECT_EQ(h1, h2);
  EXPECT_EQ(h1.size(), 16u);
  TraceBuilder t;
  int s = t.param("score");
  t.score(t.op("mul", {t.op("tanh", {t.op("div", {s, t.fconst(20.0)})}), t.fconst(20.0)}));
  EXPECT_NE(optimize(parse_trace(t.str())).hash(), h1);
  TraceBuilder u = t;
  u.normalize("none");
  EXPECT_NE(optimize(parse_trace(u.str())).hash(), optimize(parse_trace(t.str())).hash());
}

TEST(Hash, KnownValueIsStableAcrossBuilds) {
  // The hash keys on-disk caches: it must not change between builds or machines. If this
  // fails after an intended change of the text form, update the constant (and know that
  // every user's cache is invalidated).
  TraceBuilder t;
  int s = t.param("score");
  t.score(t.op("tanh", {s}));
  EXPECT_EQ(optimize(parse_trace(t.str())).hash(), std::string("ae1938ef2e6c6b4f"));
}

TEST(Variant, SameDefinitionTwiceIsOneVariant) {
  auto a = build_variant(softcap_trace("x.py:1: a", "b"));
  auto b = build_variant(softcap_trace("y.py:2: b", "c"));
  EXPECT_EQ(a.get(), b.get());
  EXPECT_EQ(find_variant(a->key).get(), a.get());
  EXPECT_EQ(find_variant("0000000000000000"), nullptr);
  EXPECT_NE(a->backward.find_output("d_score"), nullptr);
}

}  // namespace
