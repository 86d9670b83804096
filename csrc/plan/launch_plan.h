// The planner's output: the ordered kernel launches of one call, with their specs, grids,
// shared memory and arguments' shape fields, and the workspaces they need. The runner
// (csrc/runner) executes it; the torch layer allocates what it lists.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "codegen/kernel_spec.h"
#include "common/params.h"  // templates/common: the kernels' argument structs
#include "plan/problem.h"

namespace ae::plan {

// Scratch tensors a plan needs besides the call's inputs and outputs.
enum class WorkspaceId {
  BlockStates,  // uint8 [nb * nh, n_q_blocks, n_kv_blocks]: the mask's code per tile
  DqAccum,      // fp32 [B, Hq, n_q_blocks * block_m, the main kernel's Dqk (padded: sm90_padded)]:
                // the backward's dQ, unscaled
  Delta,        // fp32 [B, Hq, Sq]: rowsum(dO * O) - dlse
  Lse2,         // fp32 [B, Hq, Sq]: the LSE in the log2 domain
  DqOrder,      // int32 [B, Hq, n_q_blocks]: the deterministic backward's dQ tile counters
  OPart,        // fp32 [splits, B, Hq, Sq, Dv]: the split-KV forward's partial outputs
  LsePart,      // fp32 [splits, B, Hq, Sq]: and their LSE
  TileCounter,  // int32 [1], zeroed: the persistent forward's tiles drawn (AttnParams::tile_counter)
  VFlag,        // int32 [1], zeroed: V holds inf or nan (the V-check pass, AttnParams::v_flag)
  RestStates,   // uint8, as BlockStates: the table of the mask without its block tensor
};
constexpr int kWorkspaceCount = 10;
const char* workspace_name(WorkspaceId id);

struct Workspace {
  WorkspaceId id;
  std::vector<int64_t> shape;
  ElemType dtype = ElemType::Float32;  // Other: uint8
  // Non-empty when the contents are the same for every call with the same key: the caller may
  // keep the tensor and mark it ready next time.
  std::string cache_key;
  // The key holds only together with the captured tensors' identities (a mask that reads
  // them): the caller appends each one's data pointer, sizes, strides and version counter, and
  // keeps the tensors alive while it keeps the workspace (so no other tensor takes their
  // memory and their key).
  bool key_by_captured = false;
  // A captured tensor the contents do not depend on (-1: none), left out of that key: a block
  // tensor, new every call, beside the rest of the mask's table (add_block_tensor_states).
  int key_ignores_captured = -1;
  bool zeroed = false;  // the caller zeroes it before the call (never kept across calls)
};

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

struct Step {
  codegen::KernelSpec spec;  // what to compile (spec.kind says which template and ABI)
  Dim3 grid;
  int threads = 0;
  int smem = 0;                // dynamic shared memory, bytes
  bool fills_workspace = false;  // makes `fills`; skipped when that workspace comes ready
  WorkspaceId fills = WorkspaceId::BlockStates;
  int row_lanes = 0;             // row passes: BwdRowParams::lanes
};

struct LaunchPlan {
  bool ok = false;
  std::string reason;        // !ok: why no fused kernel runs (the fallback warning says it)
  std::string family;        // the main kernel's: "sm90", "sm80"
  std::vector<Step> steps;   // empty for an empty problem (outputs are zeros, LSE -inf)
  std::vector<Workspace> workspaces;
  // The arguments' fields that do not point at memory (dims, block counts, strides of the
  // block-state table, the head group, the scale); the runner adds the pointers and strides.
  AttnParams attn{};
  BwdRowParams rows{};
  BlockStateParams block_states{};
  // Linear attention's plans (plan/linear_plan.h): the shape fields of LinearParams.
  LinearParams linear{};

  const Workspace* workspace(WorkspaceId id) const;
  std::string describe() const;  // one line per step: "fwd90 sm_90a ... grid (32,16,1) ..."
};

}  // namespace ae::plan
