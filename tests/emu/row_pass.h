// The backward's row passes (common/bwd_rows.h) as the planner launches them, for the
// emulators' backward mains (bwd_main.cc: gfx90a; nvidia_bwd_main.cc): over hip_host.h's or
// cuda_host.h's run_block.
#pragma once

#include "common/params.h"
#include "common/shapes.h"

namespace emu {

// A row pass over every query row of (batch, heads): kRowPassThreads per block, `lanes` each.
template <class F>
void row_pass(const ae::BwdRowParams& rp, F pass) {
  const long long rows = static_cast<long long>(rp.batch) * rp.heads * rp.q_len;
  const long long per_block = ae::kRowPassThreads / rp.lanes;
  gridDim = {static_cast<unsigned>((rows + per_block - 1) / per_block), 1, 1};
  for (unsigned x = 0; x < gridDim.x; ++x) {
    blockIdx = {x, 0, 0};
    run_block(ae::kRowPassThreads, pass);
  }
}

}  // namespace emu
