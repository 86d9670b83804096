// Constant folding gives PyTorch's answer or does not fold (issue 15, defects 3 and 4): the
// scalar semantics of apply_op against values taken from PyTorch 2.11 (float64), the
// identities that are exact in IEEE arithmetic, integer constants within 32 bits.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <limits>

#include "ir/error.h"
#include "ir/eval.h"
#include "ir/parse.h"
#include "ir/passes.h"
#include "trace_builder.h"

using namespace ae::ir;
using ae::test::TraceBuilder;

namespace {

const double kNan = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

Value fv(double x) { return make_value(DType::Float, x); }
Value iv(int64_t x) {
  Value v;
  v.type = DType::Int;
  v.i = x;
  return v;
}

// op applied to args with result type t; nullopt-like: ok=false when not folded.
struct R {
  bool ok;
  Value v;
};
R apply(Op op, DType t, std::vector<Value> args) {
  Node n;
  n.op = op;
  n.type = t;
  Value out;
  bool ok = apply_op(n, args, &out);
  return {ok, out};
}
double f(Op op, std::vector<Value> args) {
  R r = apply(op, DType::Float, std::move(args));
  EXPECT_TRUE(r.ok);
  return r.v.f;
}
bool same(double a, double b) {  // bitwise-level: nan == nan, -0 != +0
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return a == b && std::signbit(a) == std::signbit(b);
}

TEST(FoldSemantics, FloatFloorDivisionIsPyTorchs) {
  // torch.floor_divide on float64 (c10's div_floor_floating)
  EXPECT_TRUE(same(f(Op::FloorDiv, {fv(1.0), fv(0.1)}), 9.0));
  EXPECT_TRUE(same(f(Op::FloorDiv, {fv(-1.0), fv(0.1)}), -10.0));
  EXPECT_TRUE(same(f(Op::FloorDiv, {fv(7.0), fv(-2.0)}), -4.0));
  EXPECT_TRUE(same(f(Op::FloorDiv, {fv(5.0), fv(0.0)}), kInf));
  EXPECT_TRUE(same(f(Op::FloorDiv, {fv(0.0), fv(0.0)}), kNan));
  EXPECT_TRUE(same(f(Op::FloorDiv, {fv(-0.0), fv(5.0)}), -0.0));
  EXPECT_TRUE(same(f(Op::FloorDiv, {fv(5.0), fv(kInf)}), 0.0));
}

TEST(FoldSemantics, FloatRemainderIsPyTorchs) {
  EXPECT_TRUE(same(f(Op::Mod, {fv(5.0), fv(kInf)}), 5.0));
  EXPECT_TRUE(same(f(Op::Mod, {fv(-5.0), fv(kInf)}), kInf));
  EXPECT_TRUE(same(f(Op::Mod, {fv(5.0), fv(-kInf)}), -kInf));
  EXPECT_TRUE(same(f(Op::Mod, {fv(5.0), fv(0.0)}), kNan));
  EXPECT_TRUE(same(f(Op::Mod, {fv(-7.5), fv(2.0)}), 0.5));
  EXPECT_TRUE(same(f(Op::Mod, {fv(1.0), fv(0.1)}), std::fmod(1.0, 0.1)));
}

TEST(FoldSemantics, NanPropagatesThroughMinMaxRelu) {
  EXPECT_TRUE(same(f(Op::Max, {fv(1.0), fv(kNan)}), kNan));
  EXPECT_TRUE(same(f(Op::Max, {fv(kNan), fv(1.0)}), kNan));
  EXPECT_TRUE(same(f(Op::Min, {fv(kNan), fv(1.0)}), kNan));
  EXPECT_TRUE(same(f(Op::Min, {fv(1.0), fv(kNan)}), kNan));
  EXPECT_TRUE(same(f(Op::Relu, {fv(kNan)}), kNan));
  EXPECT_TRUE(same(f(Op::Relu, {fv(-0.0)}), -0.0));  // torch.relu(-0.) is -0.
  EXPECT_TRUE(same(f(Op::Sign, {fv(kNan)}), 0.0));    // torch.sign(nan) is 0
  EXPECT_TRUE(same(f(Op::Sign, {fv(-0.0)}), 0.0));
}

TEST(FoldSemantics, IntegersCompareAsIntegers) {
  const int64_t big = (int64_t(1) << 53) + 1;  // not a double
  EXPECT_EQ(apply(Op::Gt, DType::Bool, {iv(big), iv(big - 1)}).v.i, 1);
  EXPECT_EQ(apply(Op::Eq, DType::Bool, {iv(big), iv(big - 1)}).v.i, 0);
  EXPECT_EQ(apply(Op::Lt, DType::Bool, {iv(big - 1), iv(big)}).v.i, 1);
}

TEST(FoldSemantics, IntegerPowerBySquaringWrapsAsInt64) {
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(apply(Op::Pow, DType::Int, {iv(1), iv(int64_t(1) << 62)}).v.i, 1);
  EXPECT_EQ(apply(Op::Pow, DType::Int, {iv(-1), iv((int64_t(1) << 62) + 1)}).v.i, -1);
  EXPECT_EQ(apply(Op::Pow, DType::Int, {iv(2), iv(64)}).v.i, 0);  // int64 wraps, as torch
  EXPECT_EQ(apply(Op::Pow, DType::Int, {iv(3), iv(40)}).v.i, -6289078614652622815LL);
  EXPECT_EQ(apply(Op::Pow, DType::Int, {iv(0), iv(0)}).v.i, 1);
  EXPECT_FALSE(apply(Op::Pow, DType::Int, {iv(2), iv(-1)}).ok);  // torch raises
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(seconds, 0.1);
}

TEST(FoldSemantics, FloatToIntOnlyWhereDefined) {
  EXPECT_EQ(apply(Op::Cast, DType::Int, {fv(-2.5)}).v.i, -2);
  EXPECT_FALSE(apply(Op::Cast, DType::Int, {fv(kNan)}).ok);
  EXPECT_FALSE(apply(Op::Cast, DType::Int, {fv(kInf)}).ok);
  EXPECT_FALSE(apply(Op::Cast, DType::Int, {fv(1e30)}).ok);
}

int score_node_op(const std::string& trace) {
  Graph g = optimize(parse_trace(trace));
  return static_cast<int>(g.nodes[g.output("score")].op);
}

TEST(FoldSemantics, AddingZeroIsNotAnIdentity) {
  // -0.0 + 0 is +0.0: x + 0 must stay, x + (-0.0) and x - 0 are exact
  for (double zero : {0.0, -0.0}) {
    for (const char* op : {"add", "sub"}) {
      TraceBuilder t;
      int s = t.param("score");
      t.score(t.op(op, {s, t.fconst(zero)}));
      const bool exact = (std::string(op) == "add") == std::signbit(zero);
      EXPECT_EQ(score_node_op(t.str()) == static_cast<int>(Op::Param), exact)
          << op << " " << zero;
    }
  }
  TraceBuilder t;
  int s = t.param("score");
  t.score(t.op("add", {t.fconst(0.0), s}));
  EXPECT_EQ(score_node_op(t.str()), static_cast<int>(Op::Add));
}

TEST(FoldSemantics, ForwardGraphIsNotReassociated) {
  // (s * 1e200) * 1e-200: inf for |s| > 1.8e108 in PyTorch, never s * 1
  TraceBuilder t;
  int s = t.param("score");
  t.score(t.op("mul", {t.op("mul", {s, t.fconst(1e200)}), t.fconst(1e-200)}));
  Graph g = optimize(parse_trace(t.str()));
  double p[kNumParams] = {1e200, 0, 0, 0, 0};
  EXPECT_TRUE(std::isinf(evaluate(g, p, nullptr)[g.output("score")].f));
}

TEST(FoldSemantics, DerivativesStillReassociate) {
  // softcap: d/ds cap * tanh(s / cap) is 1 - t^2 (the caps cancel), with no multiply left
  TraceBuilder t;
  int s = t.param("score");
  t.score(t.op("mul", {t.op("tanh", {t.op("div", {s, t.fconst(30.0)})}), t.fconst(30.0)}));
  Graph d = differentiate(optimize(parse_trace(t.str())));
  const Node& ds = d.nodes[d.output("d_score")];
  EXPECT_EQ(ds.op, Op::Sub);
}

TEST(FoldSemantics, IntegerConstantsMustFit32Bits) {
  for (int64_t v : {int64_t(1) << 31, -(int64_t(1) << 31) - 1, int64_t(1) << 40}) {
    TraceBuilder t;
    t.mask(t.op("lt", {t.param("kv_idx"), t.iconst(v)}, "m.py:3: return kv_idx < big"));
    try {
      parse_trace(t.str());
      ADD_FAILURE() << v << " accepted";
    } catch (const GraphError& e) {
      EXPECT_NE(std::string(e.what()).find("32 bits"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("m.py:3"), std::string::npos) << e.what();
    }
  }
}

TEST(FoldSemantics, FoldedIntegerOverflowIsAnError) {
  TraceBuilder t;
  int big = t.op("mul", {t.iconst(65536), t.iconst(65536)}, "m.py:4: 65536 * 65536");
  t.mask(t.op("lt", {t.param("kv_idx"), big}));
  EXPECT_THROW(optimize(parse_trace(t.str())), GraphError);
  TraceBuilder ok;
  int fine = ok.op("mul", {ok.iconst(46340), ok.iconst(46340)});
  ok.mask(ok.op("lt", {ok.param("kv_idx"), fine}));
  EXPECT_NO_THROW(optimize(parse_trace(ok.str())));
}

}  // namespace
