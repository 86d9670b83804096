// The autotuner's language and keys (csrc/tune/choice.h, shape_class.h): choices as AE_*
// variables, their parse and errors, the environment winning over a stored choice, and the
// shape classes calls share.
#include <gtest/gtest.h>

#include <cstdlib>

#include "tune/choice.h"
#include "tune/shape_class.h"

namespace ae::tune {
namespace {

TEST(TuneChoice, TextRoundTripsSorted) {
  const Choice c = Choice::parse("AE_SM90_FWD=176,2,1,1  AE_KV_SPLITS=4");
  EXPECT_EQ(c.text(), "AE_KV_SPLITS=4 AE_SM90_FWD=176,2,1,1");
  EXPECT_EQ(Choice::parse(c.text()), c);
  EXPECT_TRUE(Choice::parse("").vars.empty());
  EXPECT_EQ(Choice::parse("AE_PERSISTENT=on").vars.at("AE_PERSISTENT"), "on");
}

TEST(TuneChoice, BadTextSaysWhy) {
  auto why = [](const char* text) {
    try {
      Choice::parse(text);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("(parsed)");
  };
  EXPECT_NE(why("AE_SM90_FWD").find("not NAME=VALUE"), std::string::npos);
  EXPECT_NE(why("AE_CACHE_DIR=/tmp").find("not a tunable variable"), std::string::npos);
  EXPECT_NE(why("AE_EXACT_PV=0").find("not a tunable variable"), std::string::npos);
  EXPECT_NE(why("AE_KV_SPLITS=4;rm").find("integers"), std::string::npos);
  EXPECT_FALSE(tunable("AE_AUTOTUNE"));
  EXPECT_TRUE(tunable("AE_SM80_BWD"));
}

TEST(TuneChoice, OverridesComeFromTheChoiceUnlessTheEnvironmentSetsThem) {
  unsetenv("AE_SM90_FWD");
  unsetenv("AE_KV_SPLITS");
  const Choice c = Choice::parse("AE_SM90_FWD=128,3,0,0 AE_KV_SPLITS=8");
  plan::TuningOverrides o = overrides_with(c);
  EXPECT_EQ(o.sm90_fwd[0], 128);
  EXPECT_EQ(o.sm90_fwd[1], 3);
  EXPECT_EQ(o.sm90_fwd[2], 0);
  EXPECT_EQ(o.kv_splits, 8);
  setenv("AE_KV_SPLITS", "2", 1);  // an explicit AE_* wins, as in a sweep
  o = overrides_with(c);
  EXPECT_EQ(o.kv_splits, 2);
  EXPECT_EQ(o.sm90_fwd[0], 128);
  unsetenv("AE_KV_SPLITS");
  EXPECT_EQ(overrides_with({}).sm90_fwd[0], plan::TuningOverrides::kUnset);
}

TEST(TuneChoice, DecodeTilesApplyOnlyWhereDecodeIsOptedIn) {
  const Choice c = Choice::parse("AE_DECODE=64,2");
  unsetenv("AE_DECODE");
  EXPECT_FALSE(overrides_with(c).enable_decode);  // a stored choice never opts in
  setenv("AE_DECODE", "1", 1);
  plan::TuningOverrides o = overrides_with(c);
  EXPECT_TRUE(o.enable_decode);
  EXPECT_EQ(o.decode[0], 64);
  EXPECT_EQ(o.decode[1], 2);
  setenv("AE_DECODE", "128,4", 1);  // explicit tiles win
  EXPECT_EQ(overrides_with(c).decode[0], 128);
  unsetenv("AE_DECODE");
}

plan::PlanRequest request(int64_t q_len, int64_t kv_len, int64_t heads = 16) {
  plan::PlanRequest r;
  r.variant.key = "abc";
  r.problem.batch = 2;
  r.problem.q_heads = heads;
  r.problem.kv_heads = 4;
  r.problem.q_len = q_len;
  r.problem.kv_len = kv_len;
  r.problem.d_qk = r.problem.d_v = 128;
  return r;
}

TEST(TuneShapeClass, PowersOfTwoBuckets) {
  EXPECT_EQ(pow2_bucket(0), 1);
  EXPECT_EQ(pow2_bucket(1), 1);
  EXPECT_EQ(pow2_bucket(3), 4);
  EXPECT_EQ(pow2_bucket(4096), 4096);
  EXPECT_EQ(pow2_bucket(4097), 8192);
}

TEST(TuneShapeClass, CallsOfOneClassShareAKey) {
  const DeviceIdentity h200{"NVIDIA H200", 132, 13000};
  const std::string k = shape_class_key(request(3000, 3000), h200);
  EXPECT_EQ(k, shape_class_key(request(4096, 2049), h200));  // same buckets
  EXPECT_NE(k, shape_class_key(request(4097, 3000), h200));
  EXPECT_NE(k, shape_class_key(request(3000, 3000, 32), h200));  // batch x heads, GQA ratio
  EXPECT_NE(k, shape_class_key(request(3000, 3000), {"NVIDIA H100 80GB HBM3", 132, 13000}));
  EXPECT_NE(k, shape_class_key(request(3000, 3000), {"NVIDIA H200", 114, 13000}));
  EXPECT_NE(k, shape_class_key(request(3000, 3000), {"NVIDIA H200", 132, 12080}));
  plan::PlanRequest bwd = request(3000, 3000);
  bwd.problem.kind = plan::OpKind::Backward;
  EXPECT_NE(k, shape_class_key(bwd, h200));
  plan::PlanRequest det = bwd;
  det.problem.deterministic = true;
  EXPECT_NE(shape_class_key(bwd, h200), shape_class_key(det, h200));
  plan::PlanRequest fp16 = request(3000, 3000);
  fp16.problem.dtype = plan::ElemType::Float16;
  EXPECT_NE(k, shape_class_key(fp16, h200));
  plan::PlanRequest d64 = request(3000, 3000);
  d64.problem.d_v = 64;
  EXPECT_NE(k, shape_class_key(d64, h200));
  EXPECT_NE(k.find("abc"), std::string::npos);
  EXPECT_NE(k.find("q4096 k4096 bh32 g4"), std::string::npos) << k;
  EXPECT_NE(k.find("ae"), std::string::npos);
  plan::PlanRequest dec = request(3000, 3000);
  dec.overrides.enable_decode = true;
  EXPECT_NE(k, shape_class_key(dec, h200));
}

TEST(TuneShapeClass, MaskDensityClasses) {
  plan::VariantTraits v;
  EXPECT_STREQ(mask_class(v), "none");
  v.has_mask = true;
  EXPECT_STREQ(mask_class(v), "index");
  v.mask_reads_buffers = true;
  EXPECT_STREQ(mask_class(v), "data");
  const DeviceIdentity h200{"NVIDIA H200", 132, 13000};
  plan::PlanRequest a = request(4096, 4096), b = a;
  b.variant = v;
  b.variant.key = a.variant.key;
  EXPECT_NE(shape_class_key(a, h200), shape_class_key(b, h200));
}

}  // namespace
}  // namespace ae::tune
