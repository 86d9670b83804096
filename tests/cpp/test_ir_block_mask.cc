// Block sparsity as data: the mask's lookup of a block tensor found (ir/block_mask.h) in its
// two forms, and the planner's two steps for it (the rest's table, then the call's table from
// the tensor), forward and backward.
#include <gtest/gtest.h>

#include <functional>
#include <tuple>

#include "codegen/instantiate.h"
#include "ir/block_mask.h"
#include "ir/variant.h"
#include "plan/planner.h"
#include "plan_fixtures.h"
#include "trace_builder.h"

namespace ae {
namespace {

using test::TraceBuilder;

struct Form {
  bool codes = false;   // FlexAttention's codes (s == 2) | ((s == 1) & rest), else bool & rest
  bool causal = true;   // a rest: q_idx >= kv_idx
  std::string head = "h";  // "h", "h//2" or "0"
  std::string batch = "b";  // "b" or "0"
  int bq = 64, bk = 128;    // bq 0: the query index is 0 (one row of blocks: decode's)
};

std::string block_trace(const Form& f) {
  TraceBuilder t;
  const int buf = t.buffer("blocks", f.codes ? "int8" : "bool", {1, 1, 1, 1});
  const int s = t.param("score"), b = t.param("b"), h = t.param("h"), q = t.param("q_idx"),
            kv = t.param("kv_idx");
  t.score(s);
  const int bi = f.batch == "b" ? b : t.iconst(0);
  const int hi = f.head == "h" ? h : f.head == "0" ? t.iconst(0) : t.op("floordiv", {h, t.iconst(2)});
  const int qi = f.bq > 0 ? t.op("floordiv", {q, t.iconst(f.bq)}) : t.iconst(0);
  const int ld = t.load(buf, {bi, hi, qi,
                              t.op("floordiv", {kv, t.iconst(f.bk)})});
  const int rest = f.causal ? t.op("ge", {q, kv}) : -1;
  if (!f.codes) {
    t.mask(rest >= 0 ? t.op("and", {ld, rest}) : ld);
  } else {
    const int full = t.op("eq", {ld, t.iconst(2)}), part = t.op("eq", {ld, t.iconst(1)});
    t.mask(t.op("or", {full, rest >= 0 ? t.op("and", {part, rest}) : part}));
  }
  return t.str();
}

TEST(BlockMask, BoolFormFound) {
  const auto v = ir::build_variant(block_trace({}));
  ASSERT_EQ(v->block_mask.buffer, 0);
  EXPECT_FALSE(v->block_mask.codes);
  EXPECT_EQ(v->block_mask.block_q, 64);
  EXPECT_EQ(v->block_mask.block_k, 128);
  EXPECT_TRUE(v->block_mask.by_batch);
  EXPECT_EQ(v->block_mask.head_div, 1);
  ASSERT_TRUE(v->without_block_mask);
  // The rest is causal alone: a mask that reads no tensor.
  EXPECT_TRUE(v->without_block_mask->analysis.has_mask);
  EXPECT_EQ(v->without_block_mask->forward.text(false).find("$0["), std::string::npos);
  EXPECT_EQ(v->without_block_mask->block_mask.buffer, -1);
  // Without a rest: nothing left to evaluate.
  Form alone;
  alone.causal = false;
  EXPECT_FALSE(ir::build_variant(block_trace(alone))->without_block_mask->analysis.has_mask);
}

// A decode's blocks: the query index the constant 0 (block_q 0); another constant is not a
// block lookup.
TEST(BlockMask, OneRowOfBlocksForEveryQuery) {
  Form f;
  f.bq = 0;
  const auto v = ir::build_variant(block_trace(f));
  ASSERT_EQ(v->block_mask.buffer, 0);
  EXPECT_EQ(v->block_mask.block_q, 0);
  EXPECT_EQ(v->block_mask.block_k, 128);
  TraceBuilder t;
  const int buf = t.buffer("blocks", "bool", {1, 1, 1, 1});
  const int kv = t.param("kv_idx");
  t.score(t.param("score"));
  t.mask(t.load(buf, {t.iconst(0), t.iconst(0), t.iconst(1), t.op("floordiv", {kv, t.iconst(64)})}));
  EXPECT_EQ(ir::build_variant(t.str())->block_mask.buffer, -1);
}

TEST(BlockMask, CodesFormAndIndexForms) {
  Form f;
  f.codes = true, f.head = "h//2", f.batch = "0";
  const auto v = ir::build_variant(block_trace(f));
  ASSERT_EQ(v->block_mask.buffer, 0);
  EXPECT_TRUE(v->block_mask.codes);
  EXPECT_FALSE(v->block_mask.by_batch);
  EXPECT_EQ(v->block_mask.head_div, 2);
  EXPECT_TRUE(v->without_block_mask->analysis.has_mask);  // the rest: causal
  EXPECT_EQ(v->without_block_mask->forward.text(false).find("$0["), std::string::npos);
  f.causal = false, f.head = "0";
  const auto w = ir::build_variant(block_trace(f));
  ASSERT_EQ(w->block_mask.buffer, 0);
  EXPECT_EQ(w->block_mask.head_div, 0);
  EXPECT_FALSE(w->without_block_mask->analysis.has_mask);
}

TEST(BlockMask, OnlyThatShape) {
  // A load indexed by q_idx itself (no block), or a float tensor: not a block lookup.
  TraceBuilder t;
  const int buf = t.buffer("m", "bool", {1, 1, 1, 1});
  const int b = t.param("b"), h = t.param("h"), q = t.param("q_idx"), kv = t.param("kv_idx");
  t.score(t.param("score"));
  t.mask(t.load(buf, {b, h, q, t.op("floordiv", {kv, t.iconst(64)})}));
  EXPECT_EQ(ir::build_variant(t.str())->block_mask.buffer, -1);
  // Under an or (not a conjunct): not taken out.
  TraceBuilder o;
  const int ob = o.buffer("m", "bool", {1, 1, 1, 1});
  const int b2 = o.param("b"), h2 = o.param("h"), q2 = o.param("q_idx"), kv2 = o.param("kv_idx");
  o.score(o.param("score"));
  const int ld = o.load(ob, {b2, h2, o.op("floordiv", {q2, o.iconst(64)}),
                             o.op("floordiv", {kv2, o.iconst(64)})});
  o.mask(o.op("or", {ld, o.op("ge", {q2, kv2})}));
  EXPECT_EQ(ir::build_variant(o.str())->block_mask.buffer, -1);
}

TEST(BlockMask, RejectedWhereTheTableCouldNotSayIt) {
  auto found = [](const std::function<void(TraceBuilder&, int, int, int, int, int)>& mask,
                  const std::string& dtype, std::vector<int64_t> shape) {
    TraceBuilder t;
    const int buf = t.buffer("m", dtype, shape);
    const int b = t.param("b"), h = t.param("h"), q = t.param("q_idx"), kv = t.param("kv_idx");
    mask(t, buf, b, h, q, kv);
    return ir::build_variant(t.str())->block_mask.buffer;
  };
  auto lookup = [](TraceBuilder& t, int buf, int b, int h, int q, int kv, int bq = 64) {
    return t.load(buf, {b, h, t.op("floordiv", {q, t.iconst(bq)}),
                        t.op("floordiv", {kv, t.iconst(64)})});
  };
  // The accepted shape first, so that each rejection below is the one change.
  EXPECT_EQ(found([&](TraceBuilder& t, int buf, int b, int h, int q, int kv) {
              t.score(t.param("score"));
              t.mask(lookup(t, buf, b, h, q, kv));
            }, "bool", {1, 1, 1, 1}), 0);
  // Not 4-D.
  EXPECT_EQ(found([&](TraceBuilder& t, int buf, int b, int, int q, int kv) {
              t.score(t.param("score"));
              t.mask(t.load(buf, {b, t.op("floordiv", {q, t.iconst(64)}),
                                  t.op("floordiv", {kv, t.iconst(64)})}));
            }, "bool", {1, 1, 1}), -1);
  // A divisor that is not a positive constant.
  EXPECT_EQ(found([&](TraceBuilder& t, int buf, int b, int h, int q, int kv) {
              t.score(t.param("score"));
              t.mask(lookup(t, buf, b, h, q, kv, -64));
            }, "bool", {1, 1, 1, 1}), -1);
  // The lookup read elsewhere too (the score): not taken out of the mask.
  EXPECT_EQ(found([&](TraceBuilder& t, int buf, int b, int h, int q, int kv) {
              const int ld = lookup(t, buf, b, h, q, kv);
              t.score(t.op("where", {ld, t.param("score"), t.fconst(0.0)}));
              t.mask(ld);
            }, "bool", {1, 1, 1, 1}), -1);
  // Codes under an and: a full block would keep what the and's other side drops.
  EXPECT_EQ(found([&](TraceBuilder& t, int buf, int b, int h, int q, int kv) {
              t.score(t.param("score"));
              const int s = lookup(t, buf, b, h, q, kv);
              const int codes = t.op("or", {t.op("eq", {s, t.iconst(2)}),
                                            t.op("and", {t.op("eq", {s, t.iconst(1)}),
                                                         t.op("ge", {q, kv})})});
              t.mask(t.op("and", {t.op("lt", {kv, t.iconst(100)}), codes}));
            }, "int8", {1, 1, 1, 1}), -1);
  // Codes of a float tensor.
  EXPECT_EQ(found([&](TraceBuilder& t, int buf, int b, int h, int q, int kv) {
              t.score(t.param("score"));
              const int s = lookup(t, buf, b, h, q, kv);
              t.mask(t.op("or", {t.op("eq", {s, t.fconst(2.0)}), t.op("eq", {s, t.fconst(1.0)})}));
            }, "float32", {1, 1, 1, 1}), -1);
}

TEST(BlockMask, PlannedAsTheRestsTableThenTheTensors) {
  const auto v = ir::build_variant(block_trace({}));
  for (const plan::OpKind kind : {plan::OpKind::Forward, plan::OpKind::Backward}) {
    plan::PlanRequest r = plan::testing::request(kind, plan::devices::h200(),
                                                 plan::VariantTraits::of(*v), 128, 128, 4096);
    r.problem.batch = 2, r.problem.q_heads = r.problem.kv_heads = 4;
    r.problem.captured = {{"bool", 4, false, 1}};
    r.problem = plan::with_sparsity(r.problem, r.variant);
    ASSERT_EQ(r.problem.sparsity, plan::BlockSparsity::BlockTensor);
    const plan::LaunchPlan p = plan::make_plan(r);
    ASSERT_TRUE(p.ok) << p.reason;
    ASSERT_GE(p.steps.size(), 3u);
    EXPECT_EQ(p.steps[0].spec.kind, codegen::Kind::BlockState);
    EXPECT_TRUE(p.steps[0].spec.of_rest);
    EXPECT_EQ(p.steps[0].fills, plan::WorkspaceId::RestStates);
    EXPECT_EQ(p.steps[0].grid.z, 1u);  // causal: one table for every batch and head
    const plan::Step& blocks = p.steps[1];
    EXPECT_EQ(blocks.spec.kind, codegen::Kind::BlockStateBlocks);
    EXPECT_FALSE(blocks.fills_workspace);  // built per call
    EXPECT_TRUE(p.block_states.per_batch && p.block_states.per_head);
    // halves: the sm90 forward's warpgroups' rows, the sm90 backward's warpgroups' keys
    EXPECT_EQ(p.block_states.half_m, kind == plan::OpKind::Forward ? 64 : 0);
    EXPECT_EQ(p.block_states.half_n, kind == plan::OpKind::Forward ? 0 : 64);
    for (const plan::Step& s : p.steps)  // the backward's main kernel reads them
      if (s.spec.kind == codegen::Kind::Backward || s.spec.kind == codegen::Kind::Forward)
        EXPECT_EQ(s.spec.key_halves, kind == plan::OpKind::Backward);
    const plan::Workspace* rest = p.workspace(plan::WorkspaceId::RestStates);
    ASSERT_TRUE(rest);
    EXPECT_FALSE(rest->cache_key.empty());  // cached as a mask_mod's table
    EXPECT_EQ(rest->key_ignores_captured, 0);  // not keyed by the block tensor, new per call
    const plan::Workspace* table = p.workspace(plan::WorkspaceId::BlockStates);
    ASSERT_TRUE(table);
    EXPECT_TRUE(table->cache_key.empty());
    EXPECT_EQ(table->shape[0], 8);
    const int64_t tiles = 8LL * p.attn.n_q_blocks * p.attn.n_kv_blocks;
    EXPECT_GE(static_cast<int64_t>(blocks.grid.x) * blocks.threads, tiles);
    const std::string src = codegen::instantiate(v.get(), blocks.spec);
    EXPECT_NE(src.find("block_state_from_blocks<"), std::string::npos) << src;
    EXPECT_NE(src.find("BlockTensor<unsigned char, 0, 64, 128, true, 1, false>"), std::string::npos)
        << src;
  }
}

// The sm90 backward reads halves of the keys where one score part holds dK and dV (at most
// 256 columns): not at 192 + 128, whose deterministic kernel spilled with them.
TEST(BlockMask, BackwardKeyHalvesWhereTheRegistersAllow) {
  const auto v = ir::build_variant(block_trace({}));
  for (const auto& [dqk, dv, want] : {std::tuple{128, 128, true}, {64, 64, true},
                                      {192, 128, false}}) {
    plan::PlanRequest r = plan::testing::request(plan::OpKind::Backward, plan::devices::h200(),
                                                 plan::VariantTraits::of(*v), dqk, dv, 4096);
    r.problem.captured = {{"bool", 4, false, 1}};
    r.problem = plan::with_sparsity(r.problem, r.variant);
    const plan::LaunchPlan p = plan::make_plan(r);
    ASSERT_TRUE(p.ok) << p.reason;
    EXPECT_EQ(p.block_states.half_n, want ? 64 : 0) << dqk << "/" << dv;
    for (const plan::Step& s : p.steps)
      if (s.spec.kind == codegen::Kind::Backward) EXPECT_EQ(s.spec.key_halves, want) << dqk;
  }
}

// The sm90 forward's tiles of keys lie inside one of the tensor's blocks where the table has
// such a tile: 64 keys for 64-key blocks (the D128 table's first tile has 128).
TEST(BlockMask, ForwardTilesFitTheBlocksKeys) {
  for (const int bk : {64, 128, 256}) {
    Form f;
    f.bk = bk;
    const auto v = ir::build_variant(block_trace(f));
    plan::PlanRequest r = plan::testing::request(plan::OpKind::Forward, plan::devices::h200(),
                                                 plan::VariantTraits::of(*v), 128, 128, 4096);
    r.problem.captured = {{"bool", 4, false, 1}};
    r.problem = plan::with_sparsity(r.problem, r.variant);
    const plan::LaunchPlan p = plan::make_plan(r);
    ASSERT_TRUE(p.ok) << p.reason;
    EXPECT_EQ(p.steps.back().spec.block_n, bk == 64 ? 64 : 128) << bk;
    EXPECT_EQ(p.block_states.half_m, 64);  // its two warpgroups' rows: the table codes halves
  }
}

}  // namespace
}  // namespace ae
