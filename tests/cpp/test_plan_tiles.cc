// The tile tables (plan/tile_tables.h): what each family's table offers per head dim and
// variant, in order, and the overrides; the planner's pick per device is test_plan_planner.cc's.
#include <gtest/gtest.h>

#include "plan/device_caps.h"
#include "plan/tile_tables.h"
#include "sm90/shapes.h"

namespace ae::plan {
namespace {

TableQuery query(int d_qk, int d_v, bool loads = false, bool softmax = true) {
  TableQuery q;
  q.d_qk = d_qk;
  q.d_v = d_v;
  q.score_loads = loads;
  q.softmax = softmax;
  return q;
}

const TuningOverrides kNone;

TEST(Sm80Tiles, ForwardPreferences) {
  const Candidates d128 = sm80_forward(query(128, 128), kNone);
  ASSERT_EQ(d128.specs.size(), 2u);
  EXPECT_EQ(d128.specs[0].block_n, 64);
  EXPECT_EQ(d128.specs[0].reg_level, 0);
  EXPECT_EQ(d128.specs[0].compile_options(),
            std::vector<std::string>{"-Xptxas=--register-usage-level=0"});
  EXPECT_EQ(d128.specs[0].block_m, 128);
  EXPECT_EQ(d128.specs[1].block_n, 32);  // where shared memory is short
  EXPECT_TRUE(d128.specs[1].compile_options().empty());
  // A captured tensor read per score: 32 keys at ptxas's default level.
  const Candidates loads = sm80_forward(query(128, 128, true), kNone);
  EXPECT_EQ(loads.specs[0].block_n, 32);
  EXPECT_TRUE(loads.specs[0].compile_options().empty());
  // normalize = none: 64 keys without the level-0 option.
  EXPECT_EQ(sm80_forward(query(128, 128, false, false), kNone).specs[0].reg_level, -1);
  // Up to D64, 96 keys unless a captured tensor is read per score.
  EXPECT_EQ(sm80_forward(query(64, 64), kNone).specs[0].block_n, 96);
  EXPECT_EQ(sm80_forward(query(64, 64, true), kNone).specs[0].block_n, 64);
  EXPECT_EQ(sm80_forward(query(96, 96), kNone).specs[0].block_n, 64);
  const Candidates d256 = sm80_forward(query(256, 256), kNone);
  EXPECT_EQ(d256.specs[0].warps, 8);
  EXPECT_EQ(d256.specs[0].block_m, 128);
  EXPECT_EQ(d256.specs[0].block_n, 64);
  EXPECT_EQ(d256.specs[1].warps, 4);
  EXPECT_EQ(d256.specs[1].block_n, 32);
}

TEST(Sm80Tiles, RefusesHeadDimsItCannotTile) {
  for (auto [dq, dv] : {std::pair{20, 20}, {512, 512}, {0, 64}, {128, 8}}) {
    const Candidates c = sm80_forward(query(dq, dv), kNone);
    EXPECT_TRUE(c.specs.empty());
    EXPECT_NE(c.refusal.find("no sm80 kernel"), std::string::npos) << c.refusal;
    EXPECT_TRUE(sm80_backward(query(dq, dv), kNone).specs.empty());
  }
}

TEST(Sm80Tiles, BackwardPreferences) {
  const Candidates d128 = sm80_backward(query(128, 128), kNone);
  ASSERT_EQ(d128.specs.size(), 3u);
  EXPECT_EQ(d128.specs[0].block_m, 64);
  EXPECT_EQ(d128.specs[0].block_n, 128);
  EXPECT_EQ(d128.specs[0].warps, 8);
  EXPECT_EQ(d128.specs[0].stages, 2);
  EXPECT_EQ(d128.specs[0].reg_level, 0);
  EXPECT_EQ(d128.specs[1].stages, 1);  // single-buffered Q and dO first,
  EXPECT_EQ(d128.specs[2].block_n, 64);  // then 64 keys
  const Candidates d256 = sm80_backward(query(256, 256), kNone);
  EXPECT_EQ(d256.specs[0].block_n, 64);
  EXPECT_EQ(d256.specs[0].stages, 2);
}

TEST(Sm90Tiles, SoftmaxAheadOfPvWhereMeasuredFaster) {
  // In D128's 3-stage tile, not with a special function per score (softcap's tanh), not in
  // the other tiles (D64's 192 keys, D192/128's 128 keys in two stages)
  EXPECT_TRUE(sm90_forward(query(128, 128), kNone).specs[0].softmax_ahead);
  TableQuery special = query(128, 128);
  special.score_special = true;
  EXPECT_FALSE(sm90_forward(special, kNone).specs[0].softmax_ahead);
  EXPECT_EQ(sm90_forward(special, kNone).specs[0].describe(),
            "fwd90 sm_90a bf16 d128/128 128x128 w12 s3 ov pp");
  EXPECT_FALSE(sm90_forward(query(64, 64), kNone).specs[0].softmax_ahead);
  for (const auto& s : sm90_forward(query(192, 128), kNone).specs)  // the first that fits
    if (ae::sm90::fwd_smem_bytes(s.block_n, 192, 128, s.stages) <=
        devices::h200().smem_per_block) {
      EXPECT_FALSE(s.softmax_ahead) << s.describe();
      break;
    }
  for (const auto& s : sm90_forward(query(128, 128), kNone).specs)
    EXPECT_EQ(s.softmax_ahead, s.block_n == 128 && s.stages == 3) << s.describe();
  // AE_SM90_FWD's fifth field sets it; without the overlap it means nothing
  TuningOverrides o;
  o.sm90_fwd[4] = 0;
  EXPECT_FALSE(sm90_forward(query(128, 128), o).specs[0].softmax_ahead);
  o.sm90_fwd[4] = 1;
  EXPECT_TRUE(sm90_forward(query(64, 64), o).specs[0].softmax_ahead);
  o.sm90_fwd[2] = 0;
  EXPECT_EQ(sm90_forward(query(64, 64), o).specs[0].describe(), "fwd90 sm_90a bf16 d64/64 128x192 w12 s2");
  // Without the fifth field an overridden tile takes the table's flag for that tile (off
  // where the table has none such): old four-field values keep meaning what they meant
  auto tile = [](int d_qk, int bn, int st) {
    TuningOverrides t;
    t.sm90_fwd[0] = bn, t.sm90_fwd[1] = st, t.sm90_fwd[2] = 1, t.sm90_fwd[3] = 1;
    return sm90_forward(query(d_qk, 128), t).specs[0];
  };
  EXPECT_EQ(tile(128, 176, 2).describe(), "fwd90 sm_90a bf16 d128/128 128x176 w12 s2 ov pp");
  EXPECT_EQ(tile(192, 128, 2).describe(), "fwd90 sm_90a bf16 d192/128 128x128 w12 s2 ov pp");
  EXPECT_EQ(tile(128, 64, 3).describe(), "fwd90 sm_90a bf16 d128/128 128x64 w12 s3 ov pp");
  EXPECT_EQ(tile(128, 128, 3).describe(), "fwd90 sm_90a bf16 d128/128 128x128 w12 s3 ov pp sa");
}

TEST(Sm90Tiles, ForwardPreferences) {
  const Candidates plain = sm90_forward(query(128, 128), kNone);
  ASSERT_FALSE(plain.specs.empty());
  EXPECT_EQ(plain.specs[0].describe(), "fwd90 sm_90a bf16 d128/128 128x128 w12 s3 ov pp sa");
  EXPECT_EQ(plain.specs[1].describe(), "fwd90 sm_90a bf16 d128/128 128x176 w12 s2 ov pp");
  EXPECT_EQ(sm90_forward(query(64, 64), kNone).specs[0].block_n, 192);
  // A mask_mod that loads a captured tensor per score, or a score_mod with a pow of a
  // non-constant exponent, keeps the narrower tiles.
  for (auto [d, narrow] : {std::pair{64, 128}, {128, 128}, {256, 64}}) {
    TableQuery m = query(d, d);
    m.mask_loads = true;
    EXPECT_EQ(sm90_forward(m, kNone).specs[0].block_n, narrow) << d;
    TableQuery w = query(d, d);
    w.score_pow = true;
    EXPECT_EQ(sm90_forward(w, kNone).specs[0].block_n, narrow) << d;
  }
  // ... and at D128 without the overlap and ping-pong (a document mask: 204 -> 234 TFLOPS)
  TableQuery doc = query(128, 128);
  doc.mask_loads = doc.mask_mod_loads = true;
  EXPECT_EQ(sm90_forward(doc, kNone).specs[0].describe(), "fwd90 sm_90a bf16 d128/128 128x128 w12 s2");
  doc.mask_mod_loads = false;  // a custom normalization's stand-in: not measured, unchanged
  EXPECT_EQ(sm90_forward(doc, kNone).specs[0].describe(),
            "fwd90 sm_90a bf16 d128/128 128x128 w12 s3 ov pp sa");
  doc = query(64, 64);
  doc.mask_loads = doc.mask_mod_loads = true;
  EXPECT_TRUE(sm90_forward(doc, kNone).specs[0].overlap);  // not measured at D64
  EXPECT_EQ(sm90_forward(query(128, 128, true), kNone).specs[0].block_n, 64);
  const auto none = sm90_forward(query(128, 128, false, false), kNone).specs[0];
  EXPECT_FALSE(none.overlap);
  EXPECT_FALSE(none.pingpong);
  const auto d256 = sm90_forward(query(256, 256), kNone).specs[0];
  EXPECT_EQ(d256.block_n, 80);
  EXPECT_FALSE(d256.overlap);
  EXPECT_EQ(sm90_forward(query(256, 256, true), kNone).specs[0].block_n, 64);
  // Dqk 192: the first two candidates (3 stages of 128 keys, 176 keys) are past the shared
  // memory, the planner takes the next.
  const Candidates mla = sm90_forward(query(192, 128), kNone);
  ASSERT_GE(mla.specs.size(), 3u);
  EXPECT_GT(smem_bytes(mla.specs[0]), devices::h200().smem_per_block);
  EXPECT_GT(smem_bytes(mla.specs[1]), devices::h200().smem_per_block);
  EXPECT_EQ(mla.specs[2].block_n, 128);
  EXPECT_EQ(mla.specs[2].stages, 2);
  EXPECT_LE(smem_bytes(mla.specs[2]), devices::h200().smem_per_block);
  const Candidates d48 = sm90_forward(query(48, 48), kNone);
  EXPECT_TRUE(d48.specs.empty());
  EXPECT_NE(d48.refusal.find("no sm90 kernel"), std::string::npos);
  EXPECT_NE(d48.refusal.find("(48, 48)"), std::string::npos);  // the dims asked for
  const Candidates d96 = sm90_forward(query(96, 96), kNone);  // padded: D128's table
  ASSERT_FALSE(d96.specs.empty());
  EXPECT_EQ(d96.specs[0].d_qk, 128);
  EXPECT_EQ(d96.specs[0].d_v, 128);
  EXPECT_EQ(d96.specs[0].block_n, sm90_forward(query(128, 128), kNone).specs[0].block_n);
}

TEST(Tiles, OverridesReplaceTheFirstChoice) {
  TuningOverrides o;
  o.sm80_fwd[0] = 8, o.sm80_fwd[1] = 1, o.sm80_fwd[2] = 32, o.sm80_fwd[3] = 3;
  const Candidates c = sm80_forward(query(128, 128), o);
  EXPECT_EQ(c.specs[0].warps, 8);
  EXPECT_EQ(c.specs[0].m_tiles, 1);
  EXPECT_EQ(c.specs[0].block_n, 32);
  EXPECT_EQ(c.specs[0].reg_level, 3);
  EXPECT_EQ(c.specs[0].block_m, 128);
  EXPECT_EQ(c.specs[1].block_n, 32);  // the table's fallback stays
  // Invalid warps: the override is ignored as a whole.
  TuningOverrides bad;
  bad.sm80_fwd[0] = 5, bad.sm80_fwd[2] = 32;
  EXPECT_EQ(sm80_forward(query(128, 128), bad).specs[0].block_n, 64);
  TuningOverrides b;
  b.sm80_bwd[0] = 64, b.sm80_bwd[1] = 1;
  EXPECT_EQ(sm80_backward(query(128, 128), b).specs[0].block_n, 64);
  EXPECT_EQ(sm80_backward(query(128, 128), b).specs[0].stages, 1);
  TuningOverrides h;
  h.sm90_fwd[0] = 128, h.sm90_fwd[1] = 3, h.sm90_fwd[2] = 0;
  const auto g = sm90_forward(query(128, 128), h).specs[0];
  EXPECT_EQ(g.stages, 3);
  EXPECT_FALSE(g.overlap);
  EXPECT_TRUE(g.pingpong);  // unset: the table's
  TuningOverrides one;  // one stage with the overlap would deadlock: two
  one.sm90_fwd[1] = 1;
  EXPECT_EQ(sm90_forward(query(128, 128), one).specs[0].stages, 2);
  one.sm90_fwd[2] = 0;  // without the overlap one stage is allowed
  EXPECT_EQ(sm90_forward(query(128, 128), one).specs[0].stages, 1);
  h.sm90_fwd[0] = 128;
  EXPECT_EQ(sm90_forward(query(256, 256), h).specs[0].block_n, 80);  // 128 keys spill past Dv 128
  h.sm90_fwd[0] = 160;  // any multiple of 16 whose registers fit
  EXPECT_EQ(sm90_forward(query(128, 128), h).specs[0].block_n, 160);
  TuningOverrides width;  // a width alone: two stages (three of 160 keys are past 227 KB)
  width.sm90_fwd[0] = 160;
  EXPECT_EQ(sm90_forward(query(128, 128), width).specs[0].stages, 2);
  h.sm90_fwd[0] = 200;  // (not a width: the table's)
  EXPECT_EQ(sm90_forward(query(128, 128), h).specs[0].block_n, 128);
  h.sm90_fwd[0] = 192;  // 192 keys and Dv 128: past 240 registers
  EXPECT_EQ(sm90_forward(query(128, 128), h).specs[0].block_n, 128);
}

TEST(Tiles, SharedMemoryIsTheTemplatesFormula) {
  // sm80 forward D128, 128 x 64: Q and two stages of K and V, rows padded by 8 elements
  const auto f = sm80_forward(query(128, 128), kNone).specs[0];
  EXPECT_EQ(smem_bytes(f), 2 * (128 * 136 + 2 * 64 * 136 + 2 * 64 * 136));
  const auto g = sm90_forward(query(128, 128), kNone).specs[0];
  // (1024 bytes of alignment slack and the zero atom of exact P V: 2048; 11 mbarriers; the
  // softmax's sink; the block list and the tile slot): 3 stages of 128 keys, within the
  // H200's 232448 bytes
  EXPECT_EQ(smem_bytes(g), 2048 + 2 * (128 * 128 + 3 * 128 * 256) + 8 * 11 + 8 + 4 * 4);
  EXPECT_LE(smem_bytes(g), devices::h200().smem_per_block);
  const auto b = sm80_backward(query(128, 128), kNone).specs[0];
  EXPECT_EQ(smem_bytes(b), 2 * (128 * 272 + 2 * 64 * 272 + 2 * 128 * 72) + 2 * 2 * 4 * 64);
}

}  // namespace
}  // namespace ae::plan
