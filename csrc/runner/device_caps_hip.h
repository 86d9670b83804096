// The planner's description of a live HIP device (ROCm builds of PyTorch), and the parsing it
// needs, which is tested without a GPU.
#pragma once

#include <cstddef>
#include <string>

#include "plan/device_caps.h"

namespace ae::runner {

// The target of a gcnArchName: "gfx90a:sramecc+:xnack-" -> "gfx90a"; empty when it is not
// one ("gfx" and hex digits, then features after colons).
std::string gcn_target(const std::string& arch_name);

// The gcnArchName field of a hipDeviceProp_t filled into `props` (n bytes): the first
// NUL-terminated string past the 256-byte name field (the first field in every release) that
// is a gcnArchName; empty if none. Found by content, because the field's offset differs
// between ROCm releases (396 in ROCm 5's struct, elsewhere in ROCm 6's hipDeviceProp_tR0600).
std::string find_gcn_arch_name(const char* props, size_t n);

// The device's figures: the target from the properties, LDS per block, CUs, L2 from
// hipDeviceGetAttribute (attribute numbers of HIP's CUDA-compatible block, as ROCm 5.2's
// header numbers them). Cached per device. Throws jit::JitError when HIP cannot be loaded.
plan::DeviceCaps hip_device_caps(int device);

}  // namespace ae::runner
