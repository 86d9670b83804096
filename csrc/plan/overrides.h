// Tuning overrides from the environment: the one place the planner's AE_* variables are read
// (bench/tile_sweep.py and friends set them). The autotuner's candidates and stored choices are
// sets of these same variables (csrc/tune/choice.h), parsed here through from_lookup.
//   AE_SM80_FWD="warps,m_tiles,block_n[,reg_level]"   the sm80 forward's tiles
//   AE_SM80_BWD="block_n,stages[,reg_level]"          the sm80 backward's
//   AE_SM90_FWD="block_n,stages,overlap,pingpong[,softmax_ahead]"  the sm90 forward's
//   AE_DISABLE_SM90=1                                 Hopper runs the sm80 forward
//   AE_DISABLE_SM90_BWD=1                             Hopper runs the sm80 backward
//   AE_HEAD_GROUP=N                                   the forward's head group (tile scheduler)
//   AE_KV_SPLITS=N                                    the forward's split-KV count (1: none)
//   AE_DECODE=1 or "block_n,warps"                    forwards of 16 query rows or fewer run the
//                                                     decode template (with these tiles); off by
//                                                     default until it has run on a GPU
//   AE_CUSTOM_NORM=0                                  custom row normalizations run the
//                                                     reference executor instead of the fused
//                                                     kernels (CustomLog / CustomLinear)
//   AE_PLAIN_LOADS=1                                  captured tensors through plain loads in
//                                                     every kernel without gradient atomics
//                                                     (custom normalizations' always): for A/B
//   AE_EXACT_PV=0                                     forwards trust V to be finite at masked
//                                                     keys (no check: templates/nvidia/
//                                                     exact_pv.h): for A/B of its cost
//   AE_V_CHECK=0 or 1                                 the NVIDIA forwards' V-check pass (common/
//                                                     v_check.h) never / always (not with
//                                                     AE_EXACT_PV=0); unset: the planner's rule
//   AE_PERSISTENT=1 (on) or N >= 2                    the sm90 forward persistent where its tiles
//                                                     outnumber the CTAs (never split-KV): one
//                                                     CTA per SM, or N CTAs (tests: many tiles
//                                                     per CTA); off by default (0): measured no
//                                                     faster (bench/persistent_ab.py)
//   AE_GRAD_SINK=global                               captured tensors' gradients by global
//                                                     atomics (no shared-memory copy)
//   AE_LINEAR_STATE_COLS=32 or 64                     linear attention's state passes' value
//                                                     columns per CTA (plan/linear_plan.h)
// reg_level: ptxas --register-usage-level, -1 for its default. A field that is absent or out
// of range leaves the table's value.
#pragma once

#include <functional>

namespace ae::plan {

struct TuningOverrides {
  // Parsed fields in the order above; kUnset where not given.
  static constexpr int kUnset = -1000;
  int sm80_fwd[4] = {kUnset, kUnset, kUnset, kUnset};
  int sm80_bwd[3] = {kUnset, kUnset, kUnset};
  int sm90_fwd[5] = {kUnset, kUnset, kUnset, kUnset, kUnset};
  bool disable_sm90 = false;
  bool disable_sm90_bwd = false;
  int head_group = 0;  // 0: the planner's heuristic
  int kv_splits = 0;   // 0: the planner's heuristic
  int decode[2] = {kUnset, kUnset};
  bool enable_decode = false;
  bool global_grads = false;
  bool custom_norm_kernels = true;
  bool plain_loads = false;
  bool trust_v = false;  // AE_EXACT_PV=0: no check of V at masked keys (an A/B switch)
  int mask_load_mode = -1;  // AE_MASK_LOADS=0|1|2: how the forwards load the mask (A/B)
  int v_check = -1;         // AE_V_CHECK=0|1: the V-check pass never / always (-1: the rule)
  int persistent = 0;    // AE_PERSISTENT: 0 off, -1 ("1", "on") one CTA per SM, N >= 2 N CTAs
  int linear_state_cols = 0;  // AE_LINEAR_STATE_COLS: 32 or 64 (0: the planner's choice)

  // Read from the environment (every call: benchmarks change them between calls).
  static TuningOverrides from_environment();
  // The same parse over another source of these variables (the autotuner's stored choices,
  // csrc/tune/choice.h): lookup(name) returns the value or null.
  static TuningOverrides from_lookup(const std::function<const char*(const char*)>& lookup);
};

}  // namespace ae::plan
