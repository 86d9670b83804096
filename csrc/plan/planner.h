// The planner: a Problem, the variant's traits, the device's capabilities and the tuning
// overrides in; the launch plan out, or the reason the fused path cannot run. No torch, no
// GPU: everything it reads is plain data (tests/cpp/test_plan_*.cc plan for several devices).
#pragma once

#include <optional>

#include "plan/device_caps.h"
#include "plan/launch_plan.h"
#include "plan/overrides.h"
#include "plan/problem.h"

namespace ae::plan {

struct PlanRequest {
  Problem problem;
  VariantTraits variant;
  DeviceCaps device;
  TuningOverrides overrides;
  // Only this family for the main kernel (kernel_source, the compile-all check); none: the
  // planner's choice.
  std::optional<codegen::Family> family;
};

LaunchPlan make_plan(const PlanRequest& request);

// The bytes of an fp32 copy of the gradients the problem asks for (its captured tensors that
// want one): what a backward with GradSink::Shared adds to its shared memory.
int64_t grad_region_bytes(const Problem& problem);

}  // namespace ae::plan
