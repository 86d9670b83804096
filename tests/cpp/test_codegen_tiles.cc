// The sm80 tile table (codegen::choose_sm80): what it picks per head dim and variant, that
// every pick fits the device's shared memory, and the compiler options a pick carries.
#include <gtest/gtest.h>

#include "codegen/kernel_spec.h"

namespace {

using ae::codegen::choose_sm80;
using ae::codegen::Kind;
using ae::codegen::smem_bytes;
using ae::codegen::TileHints;

constexpr TileHints kPlain{false, true}, kLoads{true, true};

constexpr int kH100 = 227 * 1024, kA100 = 163 * 1024, kAda = 99 * 1024;

TEST(Sm80Tiles, ForwardOnHopper) {
  const auto d128 = choose_sm80(Kind::Forward, 128, 128, true, kPlain, kH100);
  ASSERT_TRUE(d128.ok) << d128.reason;
  EXPECT_EQ(d128.spec.block_n, 64);
  EXPECT_EQ(d128.spec.reg_level, 0);
  EXPECT_EQ(d128.spec.compile_options(),
            std::vector<std::string>{"-Xptxas=--register-usage-level=0"});
  // A captured tensor read per score: 32 keys, ptxas's default level (no option).
  const auto loads = choose_sm80(Kind::Forward, 128, 128, true, kLoads, kH100);
  EXPECT_EQ(loads.spec.block_n, 32);
  EXPECT_TRUE(loads.spec.compile_options().empty());
  // Up to D64, 96 keys unless a captured tensor is read per score.
  EXPECT_EQ(choose_sm80(Kind::Forward, 64, 64, true, kPlain, kH100).spec.block_n, 96);
  EXPECT_EQ(choose_sm80(Kind::Forward, 64, 64, true, kLoads, kH100).spec.block_n, 64);
  EXPECT_EQ(choose_sm80(Kind::Forward, 96, 96, true, kPlain, kH100).spec.block_n, 64);
  const auto d256 = choose_sm80(Kind::Forward, 256, 256, true, kPlain, kH100);
  EXPECT_EQ(d256.spec.warps, 8);
  EXPECT_EQ(d256.spec.block_m, 128);
  EXPECT_EQ(d256.spec.block_n, 64);
}

TEST(Sm80Tiles, SmallerDevicesTakeSmallerTiles) {
  const auto d128 = choose_sm80(Kind::Forward, 128, 128, true, kPlain, kAda);
  ASSERT_TRUE(d128.ok) << d128.reason;
  EXPECT_EQ(d128.spec.block_n, 32);
  EXPECT_TRUE(d128.spec.compile_options().empty());
  const auto d256 = choose_sm80(Kind::Forward, 256, 256, true, kPlain, kA100);
  ASSERT_TRUE(d256.ok) << d256.reason;
  EXPECT_EQ(d256.spec.warps, 4);
  EXPECT_EQ(d256.spec.block_n, 32);
}

TEST(Sm80Tiles, EveryPickFitsItsDevice) {
  for (int limit : {kH100, kA100, kAda})
    for (Kind kind : {Kind::Forward, Kind::Backward})
      for (int d : {64, 96, 128, 192, 256})
        for (bool loads : {false, true}) {
          const auto c =
              choose_sm80(kind, d, d == 192 ? 128 : d, true, TileHints{loads, true}, limit);
          if (!c.ok) {  // only the backward at D256 on Ada has no configuration
            EXPECT_TRUE(kind == Kind::Backward && d > 128 && limit == kAda) << c.reason;
            continue;
          }
          EXPECT_LE(smem_bytes(c.spec), limit) << c.spec.describe();
          EXPECT_EQ(c.spec.block_m, kind == Kind::Forward ? 16 * c.spec.m_tiles * c.spec.warps
                                                          : 64)
              << c.spec.describe();
        }
}

}  // namespace
