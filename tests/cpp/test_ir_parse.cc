// Parser and validation: good traces become typed graphs, bad ones name what is wrong.
#include <gtest/gtest.h>

#include "ir/error.h"
#include "ir/parse.h"
#include "trace_builder.h"

using ae::ir::DType;
using ae::ir::GraphError;
using ae::ir::Op;
using ae::ir::parse_trace;
using ae::test::TraceBuilder;

namespace {

std::string error_of(const std::string& json) {
  try {
    parse_trace(json);
  } catch (const GraphError& e) {
    return e.what();
  }
  return "";
}

TEST(Parse, AlibiTraceIsTyped) {
  TraceBuilder t;
  int slopes = t.buffer("slopes", "float32", {8});
  int s = t.param("score"), h = t.param("h"), q = t.param("q_idx"), kv = t.param("kv_idx");
  int d = t.op("sub", {kv, q});
  int m = t.load(slopes, {h});
  int bias = t.op("mul", {m, d});
  t.score(t.op("add", {s, bias}));
  t.mask(t.op("ge", {q, kv}));
  ae::ir::Graph g = parse_trace(t.str());
  ASSERT_EQ(g.nodes.size(), 9u);
  EXPECT_EQ(g.nodes[d].type, DType::Int);
  EXPECT_EQ(g.nodes[m].type, DType::Float);
  EXPECT_EQ(g.nodes[bias].type, DType::Float);  // float * int promotes
  EXPECT_EQ(g.nodes[g.output("mask")].type, DType::Bool);
  EXPECT_EQ(g.nodes[g.output("score")].op, Op::Add);
  EXPECT_EQ(g.buffers[0].shape, std::vector<int64_t>({8}));
  EXPECT_EQ(g.outputs[0].name, "score");
}

TEST(Parse, IntScoreIsCastToFloat) {
  TraceBuilder t;
  int q = t.param("q_idx"), kv = t.param("kv_idx");
  t.score(t.op("sub", {q, kv}));
  ae::ir::Graph g = parse_trace(t.str());
  const auto& out = g.nodes[g.output("score")];
  EXPECT_EQ(out.op, Op::Cast);
  EXPECT_EQ(out.type, DType::Float);
}

TEST(Parse, InfinityConstantsRoundTrip) {
  nlohmann::json j = {{"version", 1},
                      {"nodes", {{{"op", "const"}, {"dtype", "float"}, {"value", "-inf"}}}},
                      {"outputs", {{"score", 0}}}};
  ae::ir::Graph g = parse_trace(j.dump());
  EXPECT_TRUE(std::isinf(g.nodes[0].fvalue) && g.nodes[0].fvalue < 0);
}

TEST(ParseErrors, UnknownOpNamesOpAndLine) {
  TraceBuilder t;
  int s = t.param("score");
  t.score(t.op("erf", {s}, "model.py:7: return torch.erf(score)"));
  std::string e = error_of(t.str());
  EXPECT_NE(e.find("unsupported op 'erf'"), std::string::npos) << e;
  EXPECT_NE(e.find("model.py:7"), std::string::npos) << e;
}

TEST(ParseErrors, MaskReturningFloat) {
  TraceBuilder t;
  int q = t.param("q_idx");
  t.mask(t.op("mul", {q, t.fconst(2.0)}, "m.py:3: return q_idx * 2.0"));
  std::string e = error_of(t.str());
  EXPECT_NE(e.find("mask_mod must return a bool"), std::string::npos) << e;
  EXPECT_NE(e.find("m.py:3"), std::string::npos) << e;
}

TEST(ParseErrors, ScoreReturningBool) {
  TraceBuilder t;
  int s = t.param("score");
  t.score(t.op("gt", {s, t.fconst(0)}));
  EXPECT_NE(error_of(t.str()).find("score_mod must return a number"), std::string::npos);
}

TEST(ParseErrors, LoadRankMismatch) {
  TraceBuilder t;
  int bias = t.buffer("bias", "float32", {4, 8});
  int h = t.param("h");
  int s = t.param("score");
  t.score(t.op("add", {s, t.load(bias, {h}, "b.py:9: score + bias[h]")}));
  std::string e = error_of(t.str());
  EXPECT_NE(e.find("'bias' has rank 2"), std::string::npos) << e;
  EXPECT_NE(e.find("indexed with 1 index"), std::string::npos) << e;
  EXPECT_NE(e.find("b.py:9"), std::string::npos) << e;
}

TEST(ParseErrors, FloatIndex) {
  TraceBuilder t;
  int table = t.buffer("table", "float32", {16});
  int s = t.param("score");
  t.score(t.op("add", {s, t.load(table, {s})}));
  EXPECT_NE(error_of(t.str()).find("indexed by a float"), std::string::npos);
}

TEST(ParseErrors, BadStructure) {
  EXPECT_NE(error_of("{not json").find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of(R"({"version": 2, "nodes": []})").find("version 2"), std::string::npos);
  TraceBuilder fwd;
  fwd.param("score");
  nlohmann::json j = nlohmann::json::parse(fwd.str());
  j["nodes"].push_back({{"op", "add"}, {"args", {0, 5}}});
  EXPECT_NE(error_of(j.dump()).find("not defined before it"), std::string::npos);
  TraceBuilder arity;
  int s = arity.param("score");
  arity.score(arity.op("exp", {s, s}));
  EXPECT_NE(error_of(arity.str()).find("takes 1 argument"), std::string::npos);
  TraceBuilder param;
  param.score(param.param("qq"));
  EXPECT_NE(error_of(param.str()).find("unknown parameter 'qq'"), std::string::npos);
  TraceBuilder dtype;
  dtype.buffer("x", "complex64", {2});
  EXPECT_NE(error_of(dtype.str()).find("unsupported dtype complex64"), std::string::npos);
  TraceBuilder bits;
  int x = bits.param("score");
  bits.score(bits.op("and", {x, x}));
  EXPECT_NE(error_of(bits.str()).find("needs bool or int operands"), std::string::npos);
  TraceBuilder cond;
  int c = cond.param("score");
  cond.score(cond.op("where", {c, c, c}));
  EXPECT_NE(error_of(cond.str()).find("needs a bool condition"), std::string::npos);
}

}  // namespace
