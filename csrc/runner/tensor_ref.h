// A tensor as the runner sees it: a device pointer with sizes and strides (elements), no
// framework types. The torch layer (csrc/torch/bindings.cpp) makes these from at::Tensors.
#pragma once

#include <cstdint>
#include <string>

#include "plan/problem.h"

namespace ae::runner {

struct TensorRef {
  void* data = nullptr;
  int rank = 0;
  int64_t size[4] = {0, 0, 0, 0};
  int64_t stride[4] = {0, 0, 0, 0};
  plan::ElemType dtype = plan::ElemType::Other;
  int elem_size = 0;  // bytes

  bool defined() const { return data != nullptr; }
};

// Why the kernels cannot read a [batch, heads, rows, head_dim] 16-bit tensor as it is (empty
// when they can): the sm80 templates copy rows in 16-byte chunks and the sm90 ones read them
// by TMA, so the last dim must be contiguous and the address and the batch, head and row
// strides (of dims of size > 1) nonzero multiples of 16 bytes.
std::string unfit_for_kernels(const TensorRef& t);

}  // namespace ae::runner
