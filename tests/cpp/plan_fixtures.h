// Plan requests for the planner's tests (test_plan_planner.cc, test_plan_gfx90a.cc): the
// variants' traits they use and a problem of 2 x 16 query heads (4 KV heads) of s tokens.
#pragma once

#include <cstdint>
#include <stdexcept>

#include "plan/planner.h"

namespace ae::plan::testing {

inline VariantTraits plain() {
  VariantTraits v;
  v.key = "plain";
  return v;
}
inline VariantTraits causal() {
  VariantTraits v;
  v.key = "causal";
  v.has_mask = true;
  return v;
}

inline PlanRequest request(OpKind kind, const DeviceCaps& dev, const VariantTraits& v,
                           int d_qk = 128, int d_v = 128, int64_t s = 4096) {
  PlanRequest r;
  r.problem.kind = kind;
  r.problem.batch = 2;
  r.problem.q_heads = 16;
  r.problem.kv_heads = 4;
  r.problem.q_len = r.problem.kv_len = s;
  r.problem.d_qk = d_qk;
  r.problem.d_v = d_v;
  r.problem.scale = 0.125;
  r.variant = v;
  r.problem = with_sparsity(r.problem, v);
  r.device = dev;
  return r;
}

// The plan's forward or backward kernel (not a row pass or a block-state step).
inline const Step& main_step(const LaunchPlan& p) {
  for (const Step& s : p.steps)
    if (s.spec.kind == codegen::Kind::Forward || s.spec.kind == codegen::Kind::Backward) return s;
  throw std::runtime_error("no main step");
}

}  // namespace ae::plan::testing
