// TMA descriptors (CUtensorMap) for the sm90 kernels, built from torch tensors on the host.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "common/params.h"

namespace ae::torch_ops {

// Why a [batch, heads, rows, head_dim] bf16/fp16 tensor cannot be read by TMA as it is
// (empty when it can): the address and the batch/head/row strides in bytes must be
// multiples of 16, and the last dim contiguous.
std::string tma_unfit(const at::Tensor& t);

// A 4-D map over t (dims head_dim, rows, heads, batch), boxes of 64 x box_rows x 1 x 1
// elements landing 128-byte swizzled; rows past the end read as zeros. Throws with the
// driver's error when it refuses.
TmaDesc tma_map(const at::Tensor& t, int box_rows);

}  // namespace ae::torch_ops
