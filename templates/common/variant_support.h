// What generated Variant code calls: typed loads of captured tensors (indices clamped into
// the tensor, so a bad index never faults), the sinks that gradients of captured tensors go
// to, and PyTorch's integer semantics (floor division, remainder with the divisor's sign).
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

// ---- Gradients of captured tensors ----
// The generated Variant::grad adds dL/d value into a GradSink (its `grads` member), never
// into global memory directly: one global atomic per score ran at a few TFLOPS. The sink's
// Region says where additions go, chosen by the planner (KernelSpec::grad_sink):
//   GlobalGrads       global atomics on the fp32 gradient tensors (any size; the fallback);
//   SharedGrads<T...> a privatized copy of the gradient tensors T in dynamic shared memory
//                     past the template's own (zeroed at the CTA's start, shared atomics,
//                     each nonzero element added into global memory once at the CTA's end).
// Each call site is a run (add_run): its additions are summed in a register while the
// thread's offset stays the same, and go to the region only when it changes or at the end.
// A per-head slope is the same for every score of a (b, h) block, a relative-bias table's
// clamped distance for most scores of a long sequence: without runs the 32 lanes of a warp
// would hit one address per score.
// The backward templates call start() at the CTA's start, before a barrier of every thread
// that adds, and finish() at its end, with a barrier of those threads (`bar`).
// The gradient tensors are dense fp32 (created by the engine): element offsets by their grad
// strides cover [0, numel).

// A captured tensor that gets a gradient: its index in VariantArgs::buf and its rank.
template <int kBuffer, int kRank>
struct GradTensor {
  static constexpr int buffer = kBuffer, rank = kRank;
  static AE_DEVICE int numel(const VariantArgs& va) {
    long long n = 1;
#pragma unroll
    for (int d = 0; d < kRank; ++d) n *= va.buf[kBuffer].size[d];
    return static_cast<int>(n);  // fits: the planner gave it shared memory
  }
};

struct GlobalGrads {
  static constexpr bool kShared = false;
  AE_DEVICE void start(char*, const VariantArgs&, int, int) {}
  template <int kBuffer>
  AE_DEVICE float* at(const VariantArgs& va, long long off) const {
    return va.buf[kBuffer].grad + off;
  }
  template <class Bar>
  AE_DEVICE void finish(const VariantArgs&, int, int, Bar) {}
};

template <class... T>
struct SharedGrads {
  static constexpr bool kShared = true;
  static constexpr int kCount = sizeof...(T);
  static_assert(kCount > 0, "a shared region for no gradient tensor");
  float* region;
  int base[kCount + 1];  // tensor i at region + base[i]; base[kCount]: the total

  // The position of buffer kBuffer among T (kCount: none).
  template <int kBuffer>
  static constexpr int position() {
    int i = 0, found = kCount;
    ((T::buffer == kBuffer && found == kCount ? (found = i) : 0, ++i), ...);
    return found;
  }
  // smem_end: the first byte past the template's own shared memory (4-byte aligned).
  AE_DEVICE void start(char* smem_end, const VariantArgs& va, int tid, int threads) {
    region = reinterpret_cast<float*>(smem_end);
    int i = 0;
    base[0] = 0;
    ((base[i + 1] = base[i] + T::numel(va), ++i), ...);
    for (int e = tid; e < base[kCount]; e += threads) region[e] = 0.f;
  }
  template <int kBuffer>
  AE_DEVICE float* at(const VariantArgs&, long long off) const {
    constexpr int i = position<kBuffer>();
    static_assert(i < kCount, "an addition into a tensor without a shared copy");
    return region + base[i] + static_cast<int>(off);
  }
  template <class Bar>
  AE_DEVICE void finish(const VariantArgs& va, int tid, int threads, Bar bar) {
    bar();
    (flush<T>(va, tid, threads), ...);
  }

 private:
  template <class U>
  AE_DEVICE void flush(const VariantArgs& va, int tid, int threads) const {
    constexpr int i = position<U::buffer>();
    float* g = va.buf[U::buffer].grad;
    for (int e = tid; e < base[i + 1] - base[i]; e += threads) {
      const float x = region[base[i] + e];
      if (x != 0.f) atomicAdd(g + e, x);
    }
  }
};

// kRunBuffers: the buffer of each run (the generated grad's call sites, in order).
template <class Region, int... kRunBuffers>
struct GradSink {
  static constexpr bool kShared = Region::kShared;
  static constexpr int kRuns = sizeof...(kRunBuffers);
  Region region;
  long long run_off[kRuns > 0 ? kRuns : 1];  // -1: nothing pending
  float run_sum[kRuns > 0 ? kRuns : 1];

  AE_DEVICE void start(char* smem_end, const VariantArgs& va, int tid, int threads) {
    region.start(smem_end, va, tid, threads);
#pragma unroll
    for (int r = 0; r < kRuns; ++r) run_off[r] = -1, run_sum[r] = 0.f;
  }
  template <int kBuffer>
  AE_DEVICE void add(const VariantArgs& va, long long off, float v) const {
    atomicAdd(region.template at<kBuffer>(va, off), v);
  }
  template <int kRun, int kBuffer>
  AE_DEVICE void add_run(const VariantArgs& va, long long off, float v) {
    if (off != run_off[kRun]) {
      if (run_off[kRun] >= 0) add<kBuffer>(va, run_off[kRun], run_sum[kRun]);
      run_off[kRun] = off;
      run_sum[kRun] = 0.f;
    }
    run_sum[kRun] += v;
  }
  // The pending runs, then the region's flush.
  template <class Bar>
  AE_DEVICE void finish(const VariantArgs& va, int tid, int threads, Bar bar) {
    flush_runs<0, kRunBuffers...>(va);
    region.finish(va, tid, threads, bar);
  }

 private:
  template <int kRun>
  AE_DEVICE void flush_runs(const VariantArgs&) {}
  template <int kRun, int kBuffer, int... kRest>
  AE_DEVICE void flush_runs(const VariantArgs& va) {
    if (run_off[kRun] >= 0) add<kBuffer>(va, run_off[kRun], run_sum[kRun]);
    flush_runs<kRun + 1, kRest...>(va);
  }
};

// Loads of captured tensors (read-only while a kernel runs): __ldg, or with kPlain a plain
// load, which the compiler merges across a backward tile's scores (the same per-head value
// and what is computed from it, a decay's log2, once per tile instead of once per score;
// __ldg's loads are merged in forwards only). Plain loads are reloaded around stores that
// may alias them, such as the atomics of captured tensors' gradients: codegen picks them
// where a kernel has none (emit_variant's kPlainLoads).
template <typename T, bool kPlain = false>
AE_DEVICE T ld(const BufferArg& b, long long off) {
  const T* p = static_cast<const T*>(b.data) + off;
  return kPlain ? *p : __ldg(p);
}
AE_DEVICE float ld_bf16(const BufferArg& b, long long off) {
  unsigned short x = __ldg(static_cast<const unsigned short*>(b.data) + off);
  return __uint_as_float(static_cast<unsigned>(x) << 16);
}
AE_DEVICE float ld_f16(const BufferArg& b, long long off) {
  unsigned short x = __ldg(static_cast<const unsigned short*>(b.data) + off);
  float f;
#if AE_NVIDIA && !defined(AE_EMU)
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
// By squaring: at most 31 steps whatever the exponent (a mask's terms are evaluated at
// indices past the lengths too, where a loaded exponent may be anything). Unsigned: wraps
// modulo 2^32 as repeated multiplication does, without signed overflow.
AE_DEVICE int ipow(int a, int e) {
  if (e < 0) return 0;
  unsigned r = 1, x = static_cast<unsigned>(a);
  for (; e > 0; e >>= 1) {
    if (e & 1) r *= x;
    x *= x;
  }
  return static_cast<int>(r);
}
// torch.pow for floats. A positive finite base with a finite exponent (a per-head decay
// gamma ** distance, the common case) is exp2(b * log2(a)): the accurate log2f (computed once
// per tile where the tile's scores share the base, e.g. a per-head load) and one MUFU.EX2,
// instead of powf's ~65 instructions per score. Error: a few ulp, up to ~150 where the result
// nears the ends of the float range (|b log2 a| ~ 126). Zero, negative and non-finite
// operands get C's (and torch's) special values inline: no call, which would make ptxas
// save registers around it in the middle of the tile's loop.
AE_DEVICE float fpow(float a, float b) {
  const float inf = __int_as_float(0x7f800000);
  const float m = fabsf(a);
  float r = exp2f(b * log2f(m));
  if (a > 0.f && a < inf && fabsf(b) < inf) return r;
  const bool b_int = floorf(b) == b;  // true for +-inf, false for NaN
  if (__float_as_int(a) < 0) {        // negative, -0 or -inf: |a| ** b, signed
    if (b_int && fabsf(b) < 16777216.f && (static_cast<int>(b) & 1)) r = -r;  // odd b
    else if (!b_int && m > 0.f && m < inf) r = __int_as_float(0x7fffffff);    // no real root
  }
  if (b == 0.f || a == 1.f || (m == 1.f && fabsf(b) == inf)) r = 1.f;
  return r;
}
// fpow for an integer exponent (a distance cast to float, gamma ** (q_idx - kv_idx)): no
// branches, so that ptxas interleaves the scores of a tile and computes log2 |a| once where
// the tile shares a. exp2(n log2 |a|) covers zero and infinite bases (log2 is -inf or inf);
// n = 0 gives 1 whatever a is; odd n keeps a's sign (from 2^24 on, float(n), the exponent
// torch sees, is even).
AE_DEVICE float fpow_i(float a, int n) {
  const float r = exp2f(static_cast<float>(n) * log2f(fabsf(a)));
  const bool odd = (n & 1) && n <= (1 << 24) && n >= -(1 << 24);
  return n == 0 ? 1.f : (__float_as_int(a) < 0 && odd) ? -r : r;
}
AE_DEVICE float fsign(float x) { return x > 0.f ? 1.f : (x < 0.f ? -1.f : x); }
AE_DEVICE int isign(int x) { return (x > 0) - (x < 0); }
AE_DEVICE float fmod_floor(float a, float b) { return a - floorf(a / b) * b; }
// Fast transcendental forms for score mods: MUFU-based instead of the libm versions' long
// instruction sequences. tanh is one MUFU.TANH on NVIDIA (relative error < 2^-10.9, under
// the bf16 rounding of P; softcap's cost is then one MUFU per score, as FA3's), exp-based
// (absolute error ~1e-7) elsewhere.
AE_DEVICE float fast_tanh(float x) {
#if AE_NVIDIA && !defined(AE_EMU)
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
