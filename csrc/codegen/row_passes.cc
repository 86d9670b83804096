#include "codegen/row_passes.h"

#include <fmt/format.h>

namespace ae::codegen {

int row_pass_lanes(int dim) {
  int lanes = 1;
  while (lanes < 32 && lanes * 8 < dim) lanes *= 2;
  return lanes;
}

RowPassSource row_pass_source(RowPass pass, bool bf16) {
  const char* name = pass == RowPass::Prep ? "prep" : "dq";
  RowPassSource r;
  r.entry = fmt::format("ae_bwd_{}", name);
  r.describe = fmt::format("bwd_{} {}", name, bf16 ? "bf16" : "fp16");
  r.source = fmt::format(
      "// attention_engine kernel: {}\n"
      "#include \"common/bwd_rows.h\"\n\n"
      "extern \"C\" __global__ void __launch_bounds__({}) {}(const ae::BwdRowParams p) {{\n"
      "  ae::bwd_{}<{}>(p);\n}}\n",
      r.describe, kRowPassThreads, r.entry, name, bf16 ? "true" : "false");
  return r;
}

}  // namespace ae::codegen
