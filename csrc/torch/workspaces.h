// The plan's workspaces as torch tensors on the call's device. Block-state tables whose plan
// gives them a cache key are kept between calls and bound as ready, so their step is skipped;
// where the mask reads captured tensors, the key includes their identities and versions (an
// in-place change, a new tensor: a new table), and the cache holds them alive.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "plan/launch_plan.h"
#include "runner/runner.h"

namespace ae::torch_ops {

// Allocates (or finds) each workspace of `plan` on `like`'s device and binds it into b;
// returns the tensors, which must outlive the launches.
std::vector<at::Tensor> bind_workspaces(const plan::LaunchPlan& plan, const at::Tensor& like,
                                        runner::Bindings& b,
                                        const std::vector<at::Tensor>& captured);

// Drops the kept block-state tables.
void clear_workspace_cache();

}  // namespace ae::torch_ops
