// The score_mod's constant end factors that codegen hands to the templates (score_scales.h),
// and the generated code that goes with them.
#include <gtest/gtest.h>

#include "codegen/emit_variant.h"
#include "codegen/score_scales.h"
#include "ir/variant.h"
#include "trace_builder.h"

using ae::codegen::find_score_scales;
using ae::codegen::ScoreScales;
using ae::test::TraceBuilder;

namespace {

// cap * tanh(score / cap) (+ a causal mask), as mods.softcap builds it
TraceBuilder softcap(double cap, const std::string& normalize = "softmax") {
  TraceBuilder t;
  int s = t.param("score"), q = t.param("q_idx"), k = t.param("kv_idx");
  int c = t.fconst(cap);
  t.score(t.op("mul", {t.op("tanh", {t.op("div", {s, c})}), c}));
  t.mask(t.op("ge", {q, k}));
  t.normalize(normalize);
  return t;
}

ScoreScales scales(const TraceBuilder& t) { return find_score_scales(*ae::ir::build_variant(t.str())); }

}  // namespace

TEST(ScoreScales, SoftcapFoldsBothEnds) {
  const ScoreScales sc = scales(softcap(30.0));
  EXPECT_DOUBLE_EQ(sc.in, 1.0 / 30.0);
  EXPECT_DOUBLE_EQ(sc.out, 30.0);
  EXPECT_GE(sc.in_fwd, 0);
  EXPECT_GE(sc.in_bw, 0);  // the derivative 1 - tanh^2 reads score / cap only
  const std::string src = ae::codegen::emit_variant(*ae::ir::build_variant(softcap(30.0).str()), {});
  EXPECT_NE(src.find("kOutScale = 3.000000000e+01f"), std::string::npos) << src;
  // score() returns the tanh, and neither it nor grad() divides by cap any more
  EXPECT_EQ(src.find("3.333333507e-02f;"), std::string::npos) << src;
  EXPECT_NE(src.find("kInScale = 3.333333507e-02f"), std::string::npos) << src;
}

TEST(ScoreScales, NoOuterFactorWithoutSoftmaxOrWhenNotPositive) {
  EXPECT_EQ(scales(softcap(30.0, "none")).out, 1.0);  // the kernel would see P / 30
  EXPECT_EQ(scales(softcap(30.0, "none")).out_inner, -1);
  const ScoreScales neg = scales(softcap(-2.0));  // -2 would turn the row maximum around
  EXPECT_EQ(neg.out, 1.0);
  EXPECT_DOUBLE_EQ(neg.in, -0.5);
}

TEST(ScoreScales, NoInnerFactorWhenTheScoreIsReadElsewhere) {
  TraceBuilder t;  // tanh(score / 4) + score: the score is read twice
  int s = t.param("score");
  t.score(t.op("add", {t.op("tanh", {t.op("div", {s, t.fconst(4.0)})}), s}));
  const ScoreScales sc = scales(t);
  EXPECT_EQ(sc.in, 1.0);
  EXPECT_EQ(sc.in_fwd, -1);
  EXPECT_EQ(sc.out, 1.0);
}

TEST(ScoreScales, ScaledScoreIsOnlyAnOuterFactor) {
  TraceBuilder t;  // score * 2: the kernel's score() is the score itself
  t.score(t.op("mul", {t.param("score"), t.fconst(2.0)}));
  const ScoreScales sc = scales(t);
  EXPECT_EQ(sc.out, 2.0);
  EXPECT_EQ(sc.in, 1.0);
}
