#include "runner/device_caps_cuda.h"

#include <fmt/format.h>

#include "jit/cuda_driver.h"

namespace ae::runner {

plan::DeviceCaps cuda_device_caps(int device) {
  const jit::CudaDeviceInfo& info = jit::cuda_device_info(device);
  plan::DeviceCaps c;
  c.name = fmt::format("CUDA device {}", device);
  c.vendor = jit::Vendor::kNvidia;
  c.major = info.major;
  c.minor = info.minor;
  c.smem_per_block = info.smem_optin;
  c.multiprocessors = info.multiprocessors;
  c.l2_bytes = info.l2_bytes;
  return c;
}

}  // namespace ae::runner
