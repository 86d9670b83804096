// The plan runner: executes a LaunchPlan (csrc/plan) on a CUDA device. For each step it finds
// or compiles the kernel (kernel_registry.h), packs the arguments the template's ABI lists
// (codegen/kernel_abi.h) from the plan's shape fields and the bound tensors, and launches on
// the caller's stream. Torch-free: the torch layer binds tensors and allocates the plan's
// workspaces.
#pragma once

#include <array>
#include <vector>

#include "codegen/kernel_abi.h"
#include "ir/variant.h"
#include "plan/launch_plan.h"
#include "runner/tensor_ref.h"

namespace ae::runner {

// A captured tensor and, in the backward, where its gradient accumulates (fp32).
struct CapturedRef {
  TensorRef value;
  TensorRef grad;  // undefined: no gradient
};

// The tensors of one call. q, k, v, o, dout, dq, dk, dv: [batch, heads, rows, head_dim], fit
// for the kernels (unfit_for_kernels). lse, dlse: fp32 [batch, q_heads, q_len] contiguous.
struct Bindings {
  TensorRef q, k, v;
  TensorRef o, lse;     // forward: outputs; backward: the forward's, read by the prep pass
  TensorRef dout, dlse;  // backward (dlse optional)
  TensorRef dq, dk, dv;  // backward outputs
  std::vector<CapturedRef> captured;
  // KvLengthsLayout: each batch's key count, a 1-D int64 (elem_size 8) or int32 (4) tensor.
  TensorRef kv_lens;
  // PagedLayout: k and v are pages [num_pages, kv_heads, page_size, d] (size[0]: the pool the
  // sm80 loaders check table entries against); the int32 page table [batch, max_pages].
  TensorRef page_table;
  // VarlenLayout: int32 cumulative lengths of the packed sequences (batch + 1 entries each), and
  // the query rows in all (the statistics' row count).
  TensorRef cu_q, cu_k;
  int64_t q_total = 0;
  // The gate-training forward's block maxima: fp32 [batch, q_heads, ceil(q_len / pool_block),
  // n_pool_blocks, pool_block] contiguous (templates/common/block_max_layout.h), filled with
  // -inf (AttnParams::block_max).
  TensorRef block_max;
  TensorRef pooled;  // its map: fp32 [batch, q_heads, n_q_pool_blocks, n_pool_blocks] contiguous
  std::array<TensorRef, plan::kWorkspaceCount> workspaces;  // by WorkspaceId
  std::array<bool, plan::kWorkspaceCount> ready{};  // came filled: its step is skipped
  void* stream = nullptr;  // CUstream
  int device = 0;
};

void run(const plan::LaunchPlan& plan, const ir::Variant& variant, const Bindings& bindings);

// Linear attention's tensors (LinearParams, templates/common/params.h): q, k, v, o as
// [batch, heads, t_len, d]; a fp32 contiguous; state, state0 fp32 [batch, heads, d_k, d_v]
// contiguous (undefined: none); chunk_states [batch, heads, n_chunks, d_k, d_v] contiguous in
// q's dtype (the chunked forward's).
struct LinearBindings {
  TensorRef q, k, v, o, a, state, state0, chunk_states;
  // The backward's: dout; dq, dk, dv; da (fp32 like a); dstate, dstate0 (fp32 like the states);
  // dchunk_states (like chunk_states).
  TensorRef dout, dq, dk, dv, da, dstate, dstate0, dchunk_states;
  // Packed sequences: int32 cu_seqlens and the chunk map (LinearParams).
  TensorRef cu_seqlens, chunk_map;
  void* stream = nullptr;
  int device = 0;
};
void run_linear(const plan::LaunchPlan& plan, const LinearBindings& bindings);

// The argument structs of one call: the plan's shape fields plus the bound pointers and
// strides. A step's ABI picks from them in order (at); run() makes the TMA maps of sm90 steps
// (they need the driver) and sets the row passes' lanes per step.
struct CallArgs {
  AttnParams attn;
  VariantArgs captured;
  BwdRowParams rows;
  BlockStateParams block_states;
  LinearParams linear;
  TmaDesc tq, tk, tv, tdo;
  void* at(codegen::Arg a);
};
CallArgs call_args(const plan::LaunchPlan& plan, const Bindings& bindings);

}  // namespace ae::runner
