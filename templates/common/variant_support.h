// What generated Variant code calls: typed loads of captured tensors (indices clamped into
// the tensor, so a bad index never faults), gradient atomics, and PyTorch's integer
// semantics (floor division, remainder with the divisor's sign).
#pragma once

#include "common/ae_common.h"
#include "common/normalizers.h"  // the Variant's `Norm`
#include "common/params.h"

namespace ae {

AE_DEVICE long long clamp_index(long long i, long long size) {
  return i < 0 ? 0 : (i >= size ? size - 1 : i);
}

template <int R>
AE_DEVICE long long offset(const BufferArg& b, const long long (&idx)[R]) {
  long long off = 0;
#pragma unroll
  for (int d = 0; d < R; ++d) off += clamp_index(idx[d], b.size[d]) * b.stride[d];
  return off;
}
template <int R>
AE_DEVICE long long grad_offset(const BufferArg& b, const long long (&idx)[R]) {
  long long off = 0;
#pragma unroll
  for (int d = 0; d < R; ++d) off += clamp_index(idx[d], b.size[d]) * b.gstride[d];
  return off;
}

template <typename T>
AE_DEVICE T ld(const BufferArg& b, long long off) {
  return __ldg(static_cast<const T*>(b.data) + off);
}
AE_DEVICE float ld_bf16(const BufferArg& b, long long off) {
  unsigned short x = __ldg(static_cast<const unsigned short*>(b.data) + off);
  return __uint_as_float(static_cast<unsigned>(x) << 16);
}
AE_DEVICE float ld_f16(const BufferArg& b, long long off) {
  unsigned short x = __ldg(static_cast<const unsigned short*>(b.data) + off);
  float f;
#if AE_NVIDIA
  asm("{ .reg .f16 h; mov.b16 h, %1; cvt.f32.f16 %0, h; }\n" : "=f"(f) : "h"(x));
#else
  f = static_cast<float>(__builtin_bit_cast(_Float16, x));
#endif
  return f;
}

AE_DEVICE int floordiv(int a, int b) {
  int q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}
AE_DEVICE int remainder(int a, int b) {
  int r = a % b;
  return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}
AE_DEVICE int ipow(int a, int e) {
  int r = 1;
  for (int i = 0; i < e; ++i) r *= a;
  return e < 0 ? 0 : r;
}
AE_DEVICE float fsign(float x) { return x > 0.f ? 1.f : (x < 0.f ? -1.f : x); }
AE_DEVICE int isign(int x) { return (x > 0) - (x < 0); }
AE_DEVICE float fmod_floor(float a, float b) { return a - floorf(a / b) * b; }
// Fast transcendental forms for score mods: MUFU-based instead of the libm versions' long
// instruction sequences. tanh is one MUFU.TANH on NVIDIA (relative error < 2^-10.9, under
// the bf16 rounding of P; softcap's cost is then one MUFU per score, as FA3's), exp-based
// (absolute error ~1e-7) elsewhere.
AE_DEVICE float fast_tanh(float x) {
#if AE_NVIDIA
  float y;
  asm("tanh.approx.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
#else
  return 1.f - __fdividef(2.f, 1.f + __expf(2.f * x));
#endif
}
AE_DEVICE float fast_sigmoid(float x) { return __fdividef(1.f, 1.f + __expf(-x)); }
AE_DEVICE int imin(int a, int b) { return a < b ? a : b; }
AE_DEVICE int imax(int a, int b) { return a < b ? b : a; }
AE_DEVICE int iabs(int a) { return a < 0 ? -a : a; }

}  // namespace ae
