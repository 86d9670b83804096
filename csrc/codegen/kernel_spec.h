// What one kernel instantiation is: template, tile shape, head dims, dtype, variant and the
// dtypes of its captured tensors; and the source text generated for it.
#pragma once

#include <string>
#include <vector>

#include "ir/variant.h"

namespace ae::codegen {

enum class Kind { Forward, Backward, BlockState };

struct KernelSpec {
  Kind kind = Kind::Forward;
  std::string arch;         // "sm_80", "sm_90a", ...
  int d_qk = 0, d_v = 0;    // head dims
  int block_m = 0;          // query rows per CTA (16 * m_tiles * warps on sm80)
  int block_n = 0;          // keys per tile
  int warps = 4;
  int m_tiles = 1;          // forward: 16-row MMA tiles per warp
  int split = 1;            // backward: head-dim slices for dK/dV/dQ (one CTA each)
  bool bf16 = true;         // else fp16
  std::vector<std::string> buffer_dtypes;

  int threads() const { return 32 * warps; }
  std::string entry() const;        // the extern "C" kernel name
  std::string describe() const;     // "fwd sm_90a bf16 d128/128 64x64 w4"
};

// Shared memory (bytes) the instantiation needs.
int smem_bytes(const KernelSpec& spec);

// The instantiated translation unit: includes, the generated Variant, one extern "C" entry.
std::string instantiate(const ir::Variant& variant, const KernelSpec& spec);

// The tile table (the autotuner comes later): the sm80 configuration for a shape, or an
// empty `reason` why there is none (then the caller falls back to the reference).
struct TileChoice {
  bool ok = false;
  std::string reason;
  KernelSpec spec;
};
TileChoice choose_sm80(Kind kind, int d_qk, int d_v, bool bf16, int smem_limit);

}  // namespace ae::codegen
