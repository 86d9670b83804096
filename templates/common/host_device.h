// For headers the host compiler (the planner, g++) and the device compilers (NVRTC, hipRTC)
// both read: formulas the two sides must agree on, written once.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__) || defined(__HIP_PLATFORM_AMD__)
#define AE_HD_CONSTEXPR __host__ __device__ constexpr
#else
#define AE_HD_CONSTEXPR constexpr
#endif
