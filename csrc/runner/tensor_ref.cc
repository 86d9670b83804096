#include "runner/tensor_ref.h"

#include <fmt/format.h>

namespace ae::runner {

std::string unfit_for_kernels(const TensorRef& t) {
  if (t.rank != 4 || t.stride[3] != 1) return "the last dim is not contiguous";
  if (reinterpret_cast<uintptr_t>(t.data) % 16 != 0) return "the data is not 16-byte aligned";
  for (int d = 0; d < 3; ++d)
    if (t.size[d] > 1 && (t.stride[d] == 0 || (t.stride[d] * t.elem_size) % 16 != 0))
      return fmt::format("stride {} of dim {} is not a nonzero multiple of 16 bytes", t.stride[d], d);
  return {};
}

}  // namespace ae::runner
