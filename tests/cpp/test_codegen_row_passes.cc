// The backward's variant-free row passes: their generated source names the right template
// instantiation and compiles (NVRTC, no GPU needed) under its entry name without spills.
#include <gtest/gtest.h>

#include "codegen/row_passes.h"
#include "jit/compiler.h"
#include "jit/headers.h"

namespace ae::codegen {
namespace {

TEST(RowPasses, SourceNamesPassAndDtype) {
  const RowPassSource prep = row_pass_source(RowPass::Prep, true);
  EXPECT_EQ(prep.entry, "ae_bwd_prep");
  EXPECT_NE(prep.source.find("#include \"common/bwd_rows.h\""), std::string::npos);
  EXPECT_NE(prep.source.find("ae::bwd_prep<true>(p)"), std::string::npos);
  const RowPassSource dq = row_pass_source(RowPass::Dq, false);
  EXPECT_EQ(dq.entry, "ae_bwd_dq");
  EXPECT_NE(dq.source.find("ae::bwd_dq<false>(p)"), std::string::npos);
  EXPECT_NE(prep.describe, row_pass_source(RowPass::Prep, false).describe);  // distinct keys
}

TEST(RowPasses, LanesCoverARowInPowersOfTwo) {
  EXPECT_EQ(row_pass_lanes(16), 2);
  EXPECT_EQ(row_pass_lanes(64), 8);
  EXPECT_EQ(row_pass_lanes(96), 16);   // 12 chunks
  EXPECT_EQ(row_pass_lanes(128), 16);
  EXPECT_EQ(row_pass_lanes(192), 32);  // 24 chunks
  EXPECT_EQ(row_pass_lanes(256), 32);
  EXPECT_EQ(row_pass_lanes(512), 32);  // at most a warp: lanes loop over the rest
}

TEST(RowPasses, CompileWithoutSpills) {
  for (RowPass pass : {RowPass::Prep, RowPass::Dq}) {
    for (bool bf16 : {true, false}) {
      const RowPassSource src = row_pass_source(pass, bf16);
      jit::CompileRequest req;
      req.source = src.source;
      req.kernel = src.entry;
      req.arch = "sm_80";
      const jit::CompileResult r =
          jit::compiler_for_arch(req.arch).compile(req, *jit::template_headers());
      EXPECT_EQ(r.lowered_name, src.entry) << src.describe;
      EXPECT_GT(r.figures.registers, 0) << src.describe;
      EXPECT_EQ(r.figures.spill_stores, 0) << src.describe;
    }
  }
}

}  // namespace
}  // namespace ae::codegen
