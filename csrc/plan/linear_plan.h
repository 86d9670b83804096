// Linear attention's plans (python/attention_engine/linear.py's fused path): the decode step
// (common/linear_step.h) and the chunked forward (sm80/linear_fwd.h: its state pass, then its
// output pass). Plain data in, the launches or the reason out, as make_plan.
#pragma once

#include <cstdint>

#include "plan/device_caps.h"
#include "plan/launch_plan.h"
#include "plan/problem.h"

namespace ae::plan {

struct LinearProblem {
  bool step = false;  // one token against a state (decode), else the chunked forward
  bool backward = false;  // the chunked forward's backward (its state pass again, the reverse
                          // pass, the gradients per chunk)
  ElemType dtype = ElemType::BFloat16;  // of q, k, v
  int64_t batch = 0, heads = 0, t_len = 0, d_k = 0, d_v = 0;
  bool per_channel = false;  // decays per key channel (GLA), else one per token
  // Packed sequences (batch 1): n_seqs sequences in n_chunks chunks in all (0: dense, each
  // batch one sequence of t_len tokens).
  int64_t n_seqs = 0, n_chunks = 0;
  double scale = 1.0;
  // The state passes' value columns per CTA: 64 or 32 (twice the CTAs, half the tensor-core
  // work on each one's sequential path); 0: the planner's choice, 32 for scalar decays where
  // 64-column tiles are fewer than the SMs, else 64 (AE_LINEAR_STATE_COLS sets it).
  int state_cols = 0;
};

// The chunked kernels' tokens per chunk, and the chunks of t_len tokens.
int64_t linear_chunk_tokens();
int64_t linear_chunks(int64_t t_len);

LaunchPlan plan_linear(const LinearProblem& problem, const DeviceCaps& device);

}  // namespace ae::plan
