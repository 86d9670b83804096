// The plan's workspaces as torch tensors on the call's device. Block-state tables whose plan
// gives them a cache key (a mask that reads no captured tensor) are kept between calls and
// bound as ready, so their step is skipped.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "plan/launch_plan.h"
#include "runner/runner.h"

namespace ae::torch_ops {

// Allocates (or finds) each workspace of `plan` on `like`'s device and binds it into b;
// returns the tensors, which must outlive the launches.
std::vector<at::Tensor> bind_workspaces(const plan::LaunchPlan& plan, const at::Tensor& like,
                                        runner::Bindings& b);

// Drops the kept block-state tables.
void clear_workspace_cache();

}  // namespace ae::torch_ops
