// The backward's variant-free row passes (templates/common/bwd_rows.h): one instantiation
// per pass and dtype, a group of lanes per query row.
#pragma once

#include <string>

namespace ae::codegen {

enum class RowPass {
  Prep,  // delta and the log2 LSE (softmax), dq_accum zeroed
  Dq,    // dQ = scale * dq_accum, in the input dtype
};

constexpr int kRowPassThreads = 256;

// Lanes per row for a row of `dim` 16-bit values (dim / 8 chunks of 16 bytes): the smallest
// power of two that covers them, at most 32 (BwdRowParams::lanes). Prep: d_v; dq: d_qk.
int row_pass_lanes(int dim);

struct RowPassSource {
  std::string source;
  std::string entry;  // the extern "C" kernel name
  std::string describe;
};

RowPassSource row_pass_source(RowPass pass, bool bf16);

}  // namespace ae::codegen
