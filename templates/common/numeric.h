// Numerics and lane operations every template uses, one spelling per vendor: exp2 on the
// transcendental unit, -inf, fp32 <-> bf16/fp16 pairs, and the warp's (NVIDIA, 32 lanes) or
// wavefront's (AMD, 64 lanes) shuffles and ballots.
#pragma once

#include "common/ae_common.h"

// (AE_EMU: tests/emu/cuda_host.h runs the NVIDIA templates on the CPU, on the portable
// spellings below.)
#if AE_AMD
// The device library's exp2 on the transcendental unit alone (v_exp_f32; exp2f adds a
// denormal range fix-up around it, 3 instructions per score). Not in hipRTC's headers.
extern "C" __device__ float __ocml_native_exp2_f32(float);
#endif

namespace ae {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

AE_DEVICE float neg_inf() { return __int_as_float(0xff800000); }

AE_DEVICE float fast_exp2(float x) {
#if AE_NVIDIA && !defined(AE_EMU)
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
#else
  return __ocml_native_exp2_f32(x);  // like ex2.approx.ftz: tiny results may flush to 0
#endif
}

// Whether either half of w (two bf16 or fp16 values) is inf or nan: its exponent all ones.
template <bool kBf16>
AE_DEVICE bool nonfinite2(u32 w) {
  constexpr u32 e = kBf16 ? 0x7f80u : 0x7c00u;
  return (w & e) == e || (w & (e << 16)) == (e << 16);
}

// (lo, hi) -> one register holding two 16-bit floats, lo in the low half (round to nearest
// even).
template <bool kBf16>
AE_DEVICE u32 pack2(float lo, float hi) {
#if AE_NVIDIA && !defined(AE_EMU)
  u32 r;
  if constexpr (kBf16) {
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  } else {
    asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  }
  return r;
#else
  auto half = [](float x) -> u32 {
    if constexpr (kBf16) {
      const u32 b = __float_as_uint(x);
      return (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
    } else {
      return __builtin_bit_cast(u16, static_cast<_Float16>(x));
    }
  };
  return half(lo) | (half(hi) << 16);
#endif
}

// Two 16-bit floats of one register as fp32: lo, hi.
template <bool kBf16>
AE_DEVICE void unpack2(u32 w, float& lo, float& hi) {
  if constexpr (kBf16) {
    lo = __uint_as_float(w << 16);
    hi = __uint_as_float(w & 0xffff0000u);
  } else {
#if AE_NVIDIA && !defined(AE_EMU)
    asm("{\n.reg .f16 l, h;\nmov.b32 {l, h}, %2;\ncvt.f32.f16 %0, l;\ncvt.f32.f16 %1, h;\n}\n"
        : "=f"(lo), "=f"(hi)
        : "r"(w));
#else
    lo = static_cast<float>(__builtin_bit_cast(_Float16, static_cast<u16>(w & 0xffffu)));
    hi = static_cast<float>(__builtin_bit_cast(_Float16, static_cast<u16>(w >> 16)));
#endif
  }
}

// One 16-bit float as fp32, and back (round to nearest even).
template <bool kBf16>
AE_DEVICE float to_float(u16 x) {
  float lo, hi;
  unpack2<kBf16>(x, lo, hi);
  return lo;
}
template <bool kBf16>
AE_DEVICE u16 to_half(float x) {
  return static_cast<u16>(pack2<kBf16>(x, 0.f) & 0xffffu);
}

// ---- lanes ----
#if AE_NVIDIA
constexpr int kWarpSize = 32;
typedef u32 LaneMask;  // one bit per lane
AE_DEVICE float shfl_xor(float v, int mask) { return __shfl_xor_sync(0xffffffffu, v, mask); }
AE_DEVICE LaneMask ballot(bool pred) { return __ballot_sync(0xffffffffu, pred); }
AE_DEVICE bool any_lane(bool pred) { return __any_sync(0xffffffffu, pred); }
// The lowest set bit's index plus one (0 for none).
AE_DEVICE int first_lane(LaneMask m) { return __ffs(m); }
AE_DEVICE int popcount(LaneMask m) { return __popc(m); }
#else
constexpr int kWarpSize = 64;
typedef u64 LaneMask;
AE_DEVICE float shfl_xor(float v, int mask) { return __shfl_xor(v, mask); }
AE_DEVICE LaneMask ballot(bool pred) { return __ballot(pred); }
AE_DEVICE bool any_lane(bool pred) { return __any(pred); }
AE_DEVICE int first_lane(LaneMask m) { return __ffsll(static_cast<unsigned long long>(m)); }
AE_DEVICE int popcount(LaneMask m) { return __popcll(static_cast<unsigned long long>(m)); }
#endif

}  // namespace ae
