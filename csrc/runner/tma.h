// TMA descriptors (CUtensorMap) for the sm90 kernels, encoded on the host by the driver.
#pragma once

#include "common/params.h"
#include "runner/tensor_ref.h"

namespace ae::runner {

// A 4-D map over t (dims head_dim, rows, heads, batch), boxes of 64 x box_rows x 1 x 1
// elements landing 128-byte swizzled; rows past the end read as zeros. t must be fit for the
// kernels (unfit_for_kernels). Throws JitError with the driver's error when it refuses.
TmaDesc tma_map(const TensorRef& t, int box_rows);

}  // namespace ae::runner
