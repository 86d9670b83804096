// Basics every kernel template includes. Compiled by NVRTC and hipRTC with no standard or
// toolkit headers available, so everything here is spelled out.
#pragma once

#if defined(__HIPCC__) || defined(__HIP_PLATFORM_AMD__)
#define AE_AMD 1
#define AE_NVIDIA 0
#else
#define AE_AMD 0
#define AE_NVIDIA 1
#endif

#define AE_DEVICE __device__ __forceinline__
#define AE_HOST_DEVICE __host__ __device__ __forceinline__

namespace ae {

// Fixed-width integers (both targets are LP64 with 32-bit int).
typedef signed char i8;
typedef unsigned char u8;
typedef short i16;
typedef unsigned short u16;
typedef int i32;
typedef unsigned int u32;
typedef long long i64;
typedef unsigned long long u64;
typedef float f32;
typedef double f64;
typedef decltype(sizeof(0)) usize;

static_assert(sizeof(i16) == 2 && sizeof(i32) == 4 && sizeof(i64) == 8, "unexpected data model");
static_assert(sizeof(void*) == 8, "64-bit targets only");

template <typename T>
AE_HOST_DEVICE constexpr T min(T a, T b) { return b < a ? b : a; }
template <typename T>
AE_HOST_DEVICE constexpr T max(T a, T b) { return a < b ? b : a; }
template <typename T>
AE_HOST_DEVICE constexpr T ceil_div(T a, T b) { return (a + b - 1) / b; }

}  // namespace ae
