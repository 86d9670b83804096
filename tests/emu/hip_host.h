// A CPU stand-in for the HIP device environment, so that a gfx90a kernel's generated source
// runs on the host (tests/python/test_gfx90a_emulated.py): each GPU thread is a fiber;
// __syncthreads is a barrier of the block's fibers; a wavefront's cross-lane operations
// (shuffles, ballots, MFMA) are barriers of its 64 lanes around a shared exchange. The MFMA
// stand-ins compute the products from the operand layouts gfx90a/mfma.h states, so this checks
// everything around the matrix instructions (LDS layouts, operand addressing, score indices,
// the normalization, the epilogue, uniform control flow at every cross-lane operation: a lane
// that skipped one would deadlock here), not those layouts themselves.
// Included before the source (g++ -include); blocks run one after another.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "fibers.h"

#define __HIP_PLATFORM_AMD__ 1
#define __device__
#define __host__
#define __global__
#define __shared__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define AE_VECTOR(T, n) T __attribute__((vector_size(sizeof(T) * (n))))

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};
inline Dim3 threadIdx;  // the running fiber's (emu::run_block sets it)
inline Dim3 blockIdx, gridDim;  // the block being run (blocks run one at a time)
inline Dim3 blockDim;

struct uint4 {
  unsigned x, y, z, w;
};
struct float2 {
  float x, y;
};
struct float4 {
  float x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

inline float __int_as_float(int i) { return __builtin_bit_cast(float, i); }
inline int __float_as_int(float f) { return __builtin_bit_cast(int, f); }
inline float __uint_as_float(unsigned i) { return __builtin_bit_cast(float, i); }
inline unsigned __float_as_uint(float f) { return __builtin_bit_cast(unsigned, f); }
inline float __log2f(float x) { return std::log2(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __powf(float a, float b) { return std::pow(a, b); }
inline float __fdividef(float a, float b) { return a / b; }
extern "C" inline float __ocml_native_exp2_f32(float x) { return std::exp2(x); }
template <class T>
T __ldg(const T* p) { return *p; }
inline float atomicAdd(float* p, float v) {
  const float old = *p;  // (one fiber runs at a time, between barriers)
  *p += v;
  return old;
}
inline int atomicAdd(int* p, int v) {
  const int old = *p;
  *p += v;
  return old;
}
inline int __ffsll(unsigned long long m) { return m ? __builtin_ctzll(m) + 1 : 0; }
inline int __popcll(unsigned long long m) { return __builtin_popcountll(m); }

namespace emu {

constexpr int kLanes = 64;

struct Wave {
  Barrier bar{kLanes};
  alignas(64) unsigned char slots[kLanes][256];
};

struct Block {
  explicit Block(int threads) : bar{threads}, waves(threads / kLanes) {
    bar.on_phase = [this] {  // __syncthreads_or's vote, published once all have arrived
      vote_result = vote;
      vote = 0;
    };
    for (auto& w : waves) w = std::make_unique<Wave>();
  }
  Barrier bar;
  int vote = 0, vote_result = 0;
  std::vector<std::unique_ptr<Wave>> waves;
};
inline Block* block = nullptr;

inline Wave& wave() { return *block->waves[threadIdx.x / kLanes]; }
inline int lane() { return static_cast<int>(threadIdx.x % kLanes); }

// Runs body once per GPU thread of a block of `threads` (blockIdx set by the caller).
inline void run_block(int threads, std::function<void()> body) {
  Block b(threads);
  block = &b;
  blockDim = {static_cast<unsigned>(threads), 1, 1};
  run_fibers(threads, std::move(body),
             [](int t) { threadIdx = {static_cast<unsigned>(t), 0, 0}; });
  block = nullptr;
}

// Every lane's value of v, in lane order, into all (then the slots are free again).
template <class T>
void all_lanes(const T& v, T (&all)[kLanes]) {
  static_assert(sizeof(T) <= sizeof(Wave::slots[0]), "exchange slot");
  Wave& w = wave();
  std::memcpy(w.slots[lane()], &v, sizeof(T));
  w.bar.arrive_and_wait();
  for (int l = 0; l < kLanes; ++l) std::memcpy(&all[l], w.slots[l], sizeof(T));
  w.bar.arrive_and_wait();
}

template <class T>
T shfl(T v, int src) {
  T all[kLanes];
  all_lanes(v, all);
  return all[((src % kLanes) + kLanes) % kLanes];
}

// D = A B + C for an N x N x (256 / N) MFMA tile, operands as gfx90a/mfma.h lays them out:
// lane l = N g + j holds A[j][4 g + t], B[4 g + t][j] (t = 0..3) and C[4 G (v / 4) + 4 g +
// v % 4][j] (G = 64 / N).
template <int N, class Vec, class Acc>
Acc mfma(Vec a, Vec b, Acc c) {
  constexpr int G = kLanes / N, K = 4 * G, kC = N * N / kLanes;
  Vec as[kLanes], bs[kLanes];
  all_lanes(a, as);
  all_lanes(b, bs);
  const int j = lane() % N, g = lane() / N;
  Acc d = c;
  for (int v = 0; v < kC; ++v) {
    const int i = 4 * G * (v / 4) + 4 * g + v % 4;
    float sum = 0.f;
    for (int k = 0; k < K; ++k)
      sum += static_cast<float>(as[(k / 4) * N + i][k % 4]) *
             static_cast<float>(bs[(k / 4) * N + j][k % 4]);
    d[v] += sum;
  }
  return d;
}

// bf16 operands as 16-bit integers: the value's bits are a float's upper half.
typedef AE_VECTOR(float, 4) float4v;
template <class Vec>
float4v bf16_values(Vec x) {
  float4v f;
  for (int t = 0; t < 4; ++t)
    f[t] = __builtin_bit_cast(float, static_cast<unsigned>(static_cast<unsigned short>(x[t])) << 16);
  return f;
}

}  // namespace emu

inline void __syncthreads() { emu::block->bar.arrive_and_wait(); }
inline void __threadfence() {}  // (blocks run one at a time)
inline int __syncthreads_or(int pred) {
  if (pred) emu::block->vote = 1;
  emu::block->bar.arrive_and_wait();
  return emu::block->vote_result;
}
inline int __syncthreads_and(int pred) { return !__syncthreads_or(!pred); }
inline float __shfl_xor(float v, int mask) { return emu::shfl(v, emu::lane() ^ mask); }
inline unsigned __shfl(unsigned v, int src) { return emu::shfl(v, src); }
inline unsigned long long __ballot(int pred) {
  bool all[emu::kLanes];
  emu::all_lanes(pred != 0, all);
  unsigned long long m = 0;
  for (int l = 0; l < emu::kLanes; ++l) m |= static_cast<unsigned long long>(all[l]) << l;
  return m;
}
inline int __any(int pred) { return __ballot(pred) != 0; }

#define __builtin_amdgcn_mfma_f32_32x32x8bf16_1k(a, b, c, x, y, z) \
  emu::mfma<32>(emu::bf16_values(a), emu::bf16_values(b), c)
#define __builtin_amdgcn_mfma_f32_16x16x16bf16_1k(a, b, c, x, y, z) \
  emu::mfma<16>(emu::bf16_values(a), emu::bf16_values(b), c)
#define __builtin_amdgcn_mfma_f32_32x32x8f16(a, b, c, x, y, z) emu::mfma<32>(a, b, c)
#define __builtin_amdgcn_mfma_f32_16x16x16f16(a, b, c, x, y, z) emu::mfma<16>(a, b, c)
