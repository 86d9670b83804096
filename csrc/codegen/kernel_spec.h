// What one kernel instantiation is: template, tile shape, head dims, dtype, variant and the
// dtypes of its captured tensors; and the source text generated for it.
#pragma once

#include <string>
#include <vector>

#include "ir/variant.h"

namespace ae::codegen {

enum class Kind { Forward, Backward, BlockState };
// Which template family: the mma.sync templates (sm_80 and up) or the Hopper ones (sm_90a:
// TMA, wgmma, warp specialization; forward only so far).
enum class Family { Sm80, Sm90 };

struct KernelSpec {
  Kind kind = Kind::Forward;
  Family family = Family::Sm80;
  std::string arch;         // "sm_80", "sm_90a", ...
  int d_qk = 0, d_v = 0;    // head dims
  int block_m = 0;          // query rows per CTA (16 * m_tiles * warps on sm80)
  int block_n = 0;          // keys per tile
  int warps = 4;
  int m_tiles = 1;          // forward: 16-row MMA tiles per warp
  int stages = 2;           // sm90: K/V ring stages; sm80 backward: Q/dO buffers
  bool overlap = true;      // sm90: softmax of one block under the GEMMs of the next
  bool pingpong = true;     // sm90: consumer warpgroups take turns issuing GEMMs
  bool bf16 = true;         // else fp16
  // ptxas --register-usage-level (0..10; -1: ptxas's default, 5). Lower levels hoist fewer
  // loads ahead of their use: what lets a template at the 255-register edge fit unspilled.
  int reg_level = -1;
  std::vector<std::string> buffer_dtypes;
  // Backward: which captured tensors get gradients (atomics only for those; empty: none).
  std::vector<bool> buffer_grads;

  int threads() const { return 32 * warps; }
  std::string entry() const;        // the extern "C" kernel name
  std::string describe() const;     // "fwd sm_80 bf16 d128/128 128x64 w4 mt2 r3" ("dbuf0": grads)
  // Compiler options the instantiation needs besides the engine's own (jit::base_options).
  std::vector<std::string> compile_options() const;
  // The compile options to try instead, in order, when the instantiation spills with its own
  // (NVIDIA only; empty elsewhere): the other register-usage levels (ptxas's allocation at the
  // 255-register edge is not monotonic in the level: a variant that spills at one often fits
  // at another), then for the sm80 backward its smaller query chunk. Same source, same
  // launch shape.
  std::vector<std::vector<std::string>> fallback_options() const;
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
// What the tile tables need to know of a variant.
struct TileHints {
  bool score_loads = false;  // the score_mod loads per score (Analysis::score_loads_per_element)
  bool softmax = true;       // the row normalization is softmax (else none)
};
TileHints tile_hints(const ir::Variant& v);
TileChoice choose_sm80(Kind kind, int d_qk, int d_v, bool bf16, TileHints hints, int smem_limit);
// The sm90 forward configuration (arch sm_90a), or a reason why there is none.
TileChoice choose_sm90(int d_qk, int d_v, bool bf16, TileHints hints, int smem_limit);

}  // namespace ae::codegen
