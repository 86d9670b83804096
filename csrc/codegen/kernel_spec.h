// What one kernel instantiation is: which template (family and kind), its tile shape, head
// dims, dtype, and the dtypes of the variant's captured tensors. The planner (csrc/plan)
// chooses specs; instantiate.h turns one into source text; kernel_abi.h says what arguments
// it takes.
#pragma once

#include <string>
#include <vector>

namespace ae::codegen {

enum class Kind {
  Forward,     // attention forward: O and the row statistic (LSE)
  Backward,    // attention backward's main kernel: dK, dV, dQ accumulated in fp32
  BlockState,  // the mask's code per tile (common/block_state.h)
  BwdPrep,     // backward row pass: delta, the log2 LSE, dq_accum zeroed (common/bwd_rows.h)
  BwdDq,       // backward row pass: dQ from dq_accum
  FwdCombine,  // split-KV forward: the ranges' partial O and LSE merged (common/split_combine.h)
  BwdRowsCustom,  // backward row pass of a custom log-domain normalization: its row terms
                  // from the traced finish (common/bwd_rows.h), after BwdPrep
  VCheck,      // forward's pre-pass: whether V holds inf or nan (common/v_check.h)
  // The code per tile from the variant's block tensor (ir/block_mask.h) and the table of the
  // rest of its mask (common/block_state.h block_state_from_blocks)
  BlockStateBlocks,
  // The gate-training forward's pooled map from its block maxima and LSE (common/pool_map.h)
  PoolMap,
  // Linear attention (LinearParams): the decode step (common/linear_step.h), the chunked
  // forward's state pass and output pass (sm80/linear_fwd.h)
  LinearStep,
  LinearState,
  LinearOut,
  // and its backward (sm80/linear_bwd.h): the reverse pass over the state's gradient, the
  // gradients per chunk
  LinearDState,
  LinearGrads,
};
// Which template family: the portable kernels of templates/common (block states, row passes),
// the mma.sync templates (sm_80 and up), the Hopper ones (sm_90a: TMA, wgmma, warp
// specialization) or AMD CDNA2's (gfx90a: MFMA, wave64).
enum class Family { Common, Sm80, Sm90, Gfx90a };
// How rows are addressed (templates/common/kv_layout.h): dense, dense with each batch's own
// key count (KvLengthsLayout), K and V in pages of page_size rows (PagedLayout), or packed
// sequences of different lengths addressed by cumulative lengths (VarlenLayout).
enum class Layout { Dense, KvLengths, Paged, Varlen };
// Backward: where additions into captured tensors' gradients go (templates/common/
// variant_support.h): global atomics, or a per-CTA copy in shared memory past the template's
// own, added into global memory once at the CTA's end.
enum class GradSink { Global, Shared };

const char* kind_name(Kind k);  // "fwd", "bwd", "block_state", "bwd_prep", "bwd_dq", "fwd_combine", ...
const char* family_name(Family f);  // "common", "sm80", "sm90", "gfx90a"

struct KernelSpec {
  Kind kind = Kind::Forward;
  Family family = Family::Sm80;
  Layout layout = Layout::Dense;
  int page_size = 0;        // Layout::Paged: rows per page
  std::string arch;         // "sm_80", "sm_90a", ...
  int d_qk = 0, d_v = 0;    // head dims
  int block_m = 0;          // query rows per CTA (16 * m_tiles * warps on the sm80 forward;
                            // on gfx90a 16 or 32 rows per wave)
  int block_n = 0;          // keys per tile (linear state passes: the state's value columns)
  int warps = 4;            // warps (wavefronts of 64 lanes in the gfx90a family)
  int m_tiles = 1;          // sm80 forward: 16-row MMA tiles per warp
  int stages = 2;           // sm90: K/V ring stages; sm80 backward: Q/dO buffers
  bool overlap = true;      // sm90: softmax of one block under the GEMMs of the next
  bool pingpong = true;     // sm90: consumer warpgroups take turns issuing GEMMs
  // sm90 forward with the overlap: the softmax kept ahead of the wait for P V (sm90/fwd.h),
  // so that it runs under the warpgroup's own P V.
  bool softmax_ahead = false;
  bool bf16 = true;         // else fp16
  // ptxas --register-usage-level (0..10; -1: ptxas's default, 5). Lower levels hoist fewer
  // loads ahead of their use: what lets a template at the 255-register edge fit unspilled.
  int reg_level = -1;
  std::vector<std::string> buffer_dtypes;
  // Backward: which captured tensors get gradients (atomics only for those; empty: none).
  std::vector<bool> buffer_grads;
  // Backward: dQ's additions in a fixed order, the same bits run to run (common/dq_order.h).
  bool deterministic = false;
  GradSink grad_sink = GradSink::Global;  // backward with buffer_grads: where they go
  // Forward: built for a split-KV launch (partial outputs for the combine step).
  bool kv_split = false;
  // Forward, sm90 family: a one-wave grid whose CTAs loop over the tiles (common/
  // tile_scheduler.h PersistentTiles; AttnParams::tile_counter).
  bool persistent = false;
  // Forward, sm80 family: the decode template (sm80/decode.h: one 16-row tile per CTA, its
  // warps splitting the keys) instead of the prefill one.
  bool decode = false;
  // Forward, sm90 family: the MLA decode template (sm90/mla_decode.h: V is K's first d_v
  // columns, read from K's tile; one latent KV head, query heads packed as rows).
  bool mla = false;
  // Captured tensors through plain loads (ae::ld's kPlain) in every variant without gradient
  // atomics, not only custom normalizations' (AE_PLAIN_LOADS=1: an A/B switch until measured).
  bool plain_loads = false;
  // sm90: the tensors' head dims are below d_qk / d_v (csrc/plan/tile_tables.h sm90_padded):
  // the kernel stores only their columns (AttnParams d_qk / d_v).
  bool padded = false;
  // V trusted finite at masked keys: the forwards' checks compiled out (AE_EXACT_PV=0, an A/B
  // switch for their cost; templates/nvidia/exact_pv.h).
  bool trust_v = false;
  // Forward: how the mask's loads are made on checked tiles (templates/nvidia/mma_rows.h
  // MaskLoads: 0 per score, 1 by row, 2 by row and column; -1 the template's own pick;
  // AE_MASK_LOADS, an A/B switch).
  int mask_load_mode = -1;
  // Forward, NVIDIA families: the gate-training forward, which also writes each query row's
  // largest score per block of pool_block keys (AttnParams::block_max; 0: none).
  int pool_block = 0;
  // sm90 backward: each MMA warpgroup reads its own 64 keys' codes from the block-state table
  // (built with halves of the keys, BlockStateParams::half_n; common/block_walk.h).
  bool key_halves = false;
  // Linear attention's chunked kernels: decays per key channel (GLA), not per token.
  bool per_channel = false;
  // Kind::BlockStateBlocks: the variant's block tensor as the template reads it (its captured
  // index, block sizes, indexed by b, head index 0 / h / h // G, codes or bool).
  int blocks_buffer = -1, blocks_q = 0, blocks_k = 0, blocks_head_div = 0;
  bool blocks_by_batch = false, blocks_codes = false;
  // Kind::BlockState: the table of the variant's mask without its block tensor (the runner
  // builds the step from ir::Variant::without_block_mask), which BlockStateBlocks reads.
  bool of_rest = false;

  int threads() const { return (family == Family::Gfx90a ? 64 : 32) * warps; }
  bool is_linear() const {
    return kind == Kind::LinearStep || kind == Kind::LinearState || kind == Kind::LinearOut ||
           kind == Kind::LinearDState || kind == Kind::LinearGrads;
  }
  // Whether the kernel is generated from a variant (the row passes are the same for all).
  bool uses_variant() const {
    return kind != Kind::BwdPrep && kind != Kind::BwdDq && kind != Kind::FwdCombine &&
           kind != Kind::VCheck && kind != Kind::PoolMap && !is_linear();
  }
  std::string entry() const;        // the extern "C" kernel name: "ae_" + kind_name
  // "fwd sm_80 bf16 d128/128 128x64 w4 mt2 r0" ("dbuf0": grads, "dbuf0 smem": in shared
  // memory); what the kernel registry keys
  // a compiled kernel by, with the variant and the buffer dtypes.
  std::string describe() const;
  std::string layout_mark() const;  // describe()'s " kvlens", " page64", " varlen" ("" dense)
  // Compiler options the instantiation needs besides the engine's own (jit::base_options).
  std::vector<std::string> compile_options() const;
  // The compile options to try instead, in order, when the instantiation spills with its own
  // (NVIDIA only; empty elsewhere): the other register-usage levels (ptxas's allocation at the
  // 255-register edge is not monotonic in the level: a variant that spills at one often fits
  // at another), then for the sm80 backward its smaller query chunk. Same source, same
  // launch shape.
  std::vector<std::vector<std::string>> fallback_options() const;
};

}  // namespace ae::codegen
