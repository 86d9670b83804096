// A CPU stand-in for the CUDA device environment, so that an NVIDIA template's generated
// source runs on the host (tests/python/test_nvidia_emulated.py): each GPU thread is a fiber
// (fibers.h); __syncthreads, a warp's shuffles and votes, named barriers and mbarriers are
// barriers of fibers. The Hopper instructions' stand-ins (tests/emu/shims: TMA, wgmma,
// stmatrix; found before templates/ on the include path) compute from the layouts and
// descriptor fields the templates assume, so this checks everything around them (shared-memory
// layouts and offsets, the producer / consumer protocol, score indices, the normalization,
// the epilogue) and, where it runs a template that has passed its GPU tests, those
// assumptions too. Included before the source (g++ -include); blocks run one after another.
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fibers.h"

#define AE_EMU 1
#define __device__
#define __host__
#define __global__
// (thread_local: static, and shared by the fibers, which share one OS thread; also valid on an
// extern declaration, which static is not. Build with -fno-extern-tls-init: an extern
// thread_local array then needs no initialization wrapper, which crashed across files.)
#define __shared__ thread_local
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
#define __align__(n) __attribute__((aligned(n)))

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};
inline Dim3 threadIdx;  // the running fiber's
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
inline float2 make_float2(float x, float y) { return {x, y}; }
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
// (common/numeric.h's portable exp2 under AE_EMU)
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
inline unsigned atomicAdd(unsigned* p, unsigned v) {
  const unsigned old = *p;
  *p += v;
  return old;
}
inline int __ffs(unsigned m) { return m ? __builtin_ctz(m) + 1 : 0; }
inline int __ffsll(unsigned long long m) { return m ? __builtin_ctzll(m) + 1 : 0; }
inline int __popc(unsigned m) { return __builtin_popcount(m); }
inline void __threadfence() {}

namespace emu {

constexpr int kLanes = 32;

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "emu: %s (block %u %u %u, thread %u)\n", what, blockIdx.x, blockIdx.y,
               blockIdx.z, threadIdx.x);
  std::abort();
}

// The kernel's shared memory (the main's array; __cvta_generic_to_shared: offsets into it).
inline char* smem = nullptr;
inline unsigned smem_bytes = 0;

// What a TmaDesc holds here (the main encodes it, the TMA stand-in reads it): a 4-D tensor of
// 16-bit elements, dims innermost first, the byte strides of dims 1..3, and the box (64
// elements by box_rows rows) that one load copies with the 128-byte swizzle.
struct TmaMap {
  const char* base;
  long long dims[4];
  long long strides[3];
  int box_rows;
};

// The 128-byte swizzle of a shared-memory offset (tiles 1024-byte aligned): the 16-byte chunk
// index XORed with the 128-byte row's index within its 1024 bytes.
inline unsigned swizzle128(unsigned off) { return off ^ (((off >> 7) & 7u) << 4); }

// One warp's exchange: every lane writes its value, all wait, each reads, all wait again.
struct Warp {
  Barrier bar{kLanes};
  alignas(64) unsigned char slots[kLanes][64];
};

// A named barrier (bar.sync / bar.arrive with a thread count), with bar.red.or's vote.
struct NamedBarrier {
  Barrier bar{0};
  bool vote = false, result = false;
};

// An mbarrier: arrivals left in the phase, the transaction bytes still expected, the phase's
// parity.
struct MBarrier {
  int count = 0, pending = 0;
  long long tx = 0;
  unsigned phase = 0;
  void maybe_complete() {
    ++progress;
    if (pending == 0 && tx == 0) {
      phase ^= 1u;
      pending = count;
    }
  }
};

struct Block {
  explicit Block(int threads) : bar{threads}, warps(threads / kLanes) {
    for (auto& w : warps) w = std::make_unique<Warp>();
    bar.on_phase = [this] {  // __syncthreads_or's / _and's votes, published once all arrived
      vote_result = vote, vote_and_result = vote_and;
      vote = 0, vote_and = 1;
    };
  }
  Barrier bar;
  int vote = 0, vote_result = 0, vote_and = 1, vote_and_result = 1;
  std::vector<std::unique_ptr<Warp>> warps;
  std::map<int, NamedBarrier> named;
  std::map<unsigned, MBarrier> mbar;  // by shared-memory offset
  std::map<std::string, std::shared_ptr<void>> state;  // the shims' own, per block
};
inline Block* block = nullptr;

inline Warp& warp() { return *block->warps[threadIdx.x / kLanes]; }
inline int lane() { return static_cast<int>(threadIdx.x % kLanes); }

template <class T>
void all_lanes(const T& v, T (&all)[kLanes]) {
  static_assert(sizeof(T) <= sizeof(Warp::slots[0]), "exchange slot");
  Warp& w = warp();
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

// Runs body once per GPU thread of a block of `threads` (blockIdx set by the caller).
inline void run_block(int threads, std::function<void()> body) {
  Block b(threads);
  block = &b;
  blockDim = {static_cast<unsigned>(threads), 1, 1};
  run_fibers(threads, std::move(body),
             [](int t) { threadIdx = {static_cast<unsigned>(t), 0, 0}; });
  block = nullptr;
}

}  // namespace emu

inline unsigned long long __cvta_generic_to_shared(const void* p) {
  return static_cast<unsigned long long>(static_cast<const char*>(p) - emu::smem);
}
inline void __syncthreads() { emu::block->bar.arrive_and_wait(); }
inline int __syncthreads_or(int pred) {
  if (pred) emu::block->vote = 1;
  emu::block->bar.arrive_and_wait();
  return emu::block->vote_result;
}
inline int __syncthreads_and(int pred) {
  if (!pred) emu::block->vote_and = 0;
  emu::block->bar.arrive_and_wait();
  return emu::block->vote_and_result;
}
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp().bar.arrive_and_wait(); }
template <class T>
T __shfl_sync(unsigned, T v, int src) { return emu::shfl(v, src); }
template <class T>
T __shfl_xor_sync(unsigned, T v, int mask) { return emu::shfl(v, emu::lane() ^ mask); }
inline unsigned __ballot_sync(unsigned, int pred) {
  bool all[emu::kLanes];
  emu::all_lanes(pred != 0, all);
  unsigned m = 0;
  for (int l = 0; l < emu::kLanes; ++l) m |= static_cast<unsigned>(all[l]) << l;
  return m;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
