// The HIP module API the JIT calls on AMD, from libamdhip64 opened with dlopen on first use.
// Written and built everywhere; exercised only on an AMD GPU machine.
#pragma once
#include <string>

#include "jit/dynlib.h"

namespace ae::jit {

using hipError = int;  // 0 == hipSuccess
using hipModule = void*;
using hipFunction = void*;
using hipStream = void*;

struct HipDriver {
  DynLib lib;
  hipError (*SetDevice)(int);
  hipError (*GetDevice)(int*);
  hipError (*ModuleLoadData)(hipModule*, const void*);
  hipError (*ModuleGetFunction)(hipFunction*, hipModule, const char*);
  hipError (*ModuleLaunchKernel)(hipFunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                                 unsigned, unsigned, hipStream, void**, void**);
  const char* (*GetErrorName)(hipError);
  const char* (*GetErrorString)(hipError);
  // For the planner's description of a device (runner/device_caps_hip.h). The properties
  // struct is filled into a caller's buffer: its layout differs between ROCm releases
  // (hipGetDevicePropertiesR0600 from ROCm 6 on, preferred where exported).
  hipError (*DeviceGetAttribute)(int*, int, int);
  hipError (*GetDeviceProperties)(void*, int);
};

// Loads libamdhip64 (or $AE_LIBAMDHIP_PATH); throws JitError.
const HipDriver& hip_driver();
std::string hip_error_text(hipError e);

}  // namespace ae::jit
