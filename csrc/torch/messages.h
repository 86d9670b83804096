// Error messages for the torch ops, formatted with fmt into one string before they reach
// TORCH_CHECK. Why not TORCH_CHECK's own argument streaming: on the GPU machine (extension
// built by its /opt/gcc g++ 13 against PyTorch's wheel) streaming an IntArrayRef through
// c10::str crashed the process (2026-11-21, cuda-gdb backtrace in c10::detail::_str); a
// single std::string argument never goes through an ostringstream.
#pragma once

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <string>

namespace ae::torch_ops {

inline std::string shape_str(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += fmt::format("{}{}", d ? ", " : "", t.size(d));
  return s + "]";
}
inline std::string dtype_str(const at::Tensor& t) { return c10::toString(t.scalar_type()); }
inline std::string device_str(const at::Tensor& t) { return t.device().str(); }

}  // namespace ae::torch_ops

// TORCH_CHECK_VALUE / _TYPE / _INDEX with an fmt message: AE_CHECK(VALUE, cond, "...{}", x).
#define AE_CHECK(KIND, cond, ...) \
  TORCH_CHECK_##KIND(cond, ::fmt::format("attention_engine: " __VA_ARGS__))
