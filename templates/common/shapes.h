// Launch shapes of the variant-independent kernels in common/, shared with the planner
// (csrc/plan), which sizes their grids: one definition for host and device.
#pragma once

#include "common/host_device.h"

namespace ae {

// common/block_state.h: one CTA per (query block, key block) tile.
constexpr int kBlockStateThreads = 128;

// common/split_combine.h: a warp per query row.
constexpr int kCombineThreads = 128;

// common/pool_map.h: a warp per (batch, head, query block) of the pooled map.
constexpr int kPoolThreads = 256;

// common/linear_step.h: a thread per column of the state, kLinearStepCols per CTA.
constexpr int kLinearStepCols = 64;

// common/bwd_rows.h: groups of lanes per query row.
constexpr int kRowPassThreads = 256;

// Lanes per row of a row pass for rows of `dim` 16-bit values (dim / 8 chunks of 16 bytes):
// the smallest power of two that covers them, at most 32 (BwdRowParams::lanes). Prep: d_v;
// dq: d_qk.
AE_HD_CONSTEXPR int row_pass_lanes(int dim) {
  int lanes = 1;
  while (lanes < 32 && lanes * 8 < dim) lanes *= 2;
  return lanes;
}

}  // namespace ae
