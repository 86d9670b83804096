// The planner's description of a live CUDA device (cached by the driver layer per device).
#pragma once

#include "plan/device_caps.h"

namespace ae::runner {

plan::DeviceCaps cuda_device_caps(int device);

}  // namespace ae::runner
