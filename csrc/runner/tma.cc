#include "runner/tma.h"

#include <fmt/format.h>

#include "jit/cuda_driver.h"
#include "jit/errors.h"

namespace ae::runner {

TmaDesc tma_map(const TensorRef& t, int box_rows) {
  const jit::CudaDriver& drv = jit::cuda_driver();
  if (!drv.TensorMapEncodeTiled)
    throw jit::JitError("attention_engine: the CUDA driver has no cuTensorMapEncodeTiled (CUDA 12+)");
  const unsigned long long dims[4] = {
      static_cast<unsigned long long>(t.size[3]), static_cast<unsigned long long>(t.size[2]),
      static_cast<unsigned long long>(t.size[1]), static_cast<unsigned long long>(t.size[0])};
  unsigned long long strides[3];
  for (int i = 0; i < 3; ++i) {
    const int d = 2 - i;  // rows, heads, batch
    // A dim of size 1 is only ever read at 0: any valid stride does.
    strides[i] = t.size[d] > 1 ? static_cast<unsigned long long>(t.stride[d]) * t.elem_size : 16;
  }
  const unsigned box[4] = {64, static_cast<unsigned>(box_rows), 1, 1};
  const unsigned elem_strides[4] = {1, 1, 1, 1};
  constexpr int kBf16 = 9, kF16 = 6, kInterleaveNone = 0, kSwizzle128 = 3, kL2Promo128 = 2,
                kOobZero = 0;
  TmaDesc map{};
  const jit::CUresult r = drv.TensorMapEncodeTiled(
      &map, t.dtype == plan::ElemType::BFloat16 ? kBf16 : kF16, 4, t.data, dims, strides, box,
      elem_strides, kInterleaveNone, kSwizzle128, kL2Promo128, kOobZero);
  if (r != 0)
    throw jit::JitError(fmt::format(
        "attention_engine: cuTensorMapEncodeTiled refused a [{}, {}, {}, {}] tensor with strides "
        "({}, {}, {}): {}",
        t.size[0], t.size[1], t.size[2], t.size[3], t.stride[0], t.stride[1], t.stride[2],
        jit::cuda_error_text(r)));
  return map;
}

}  // namespace ae::runner
