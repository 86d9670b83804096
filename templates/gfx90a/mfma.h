// CDNA2's matrix instructions (MFMA) through the compiler's builtins, bf16 and fp16 with fp32
// accumulators, and where their operands and results live in a wave of 64 lanes. Two shapes,
// by the rows N a wave owns: 32x32x8 (N = 32) and 16x16x16 (N = 16). With G = 64 / N lane
// groups, lane l = N g + j (j = l % N, g = l / N) holds, for an M x N x K product (M = N,
// K = 4 G):
//   A (M x K):  A[j][4 g + t]            t = 0..3, one 64-bit register pair
//   B (K x N):  B[4 g + t][j]            t = 0..3
//   C (M x N):  C[4 G (v / 4) + 4 g + v % 4][j]   v = 0 .. N N / 64 - 1
// So a lane's C values all sit in column j, and a C tile's values 4 kk .. 4 kk + 3 are the
// B operand of k-step kk of a product that reads that C (as bf16/fp16) along its rows:
// what the forward does with S^T = K Q^T and O^T = V^T P^T (gfx90a/fwd.h).
#pragma once

#include "common/numeric.h"

namespace ae::gfx90a {

// Clang's vector types, which the builtins take (a host build of the template, the CPU
// emulation in tests/emu, spells them with GCC's vector_size).
#ifndef AE_VECTOR
#define AE_VECTOR(T, n) T __attribute__((ext_vector_type(n)))
#endif
typedef AE_VECTOR(short, 4) i16x4;
typedef AE_VECTOR(_Float16, 4) f16x4;
typedef AE_VECTOR(float, 4) f32x4;
typedef AE_VECTOR(float, 16) f32x16;

template <int N>
struct Mfma;

template <>
struct Mfma<32> {
  using Acc = f32x16;
  static constexpr int kGroups = 2, kDepth = 8, kC = 16;
  template <bool kBf16>
  AE_DEVICE static Acc mma(u64 a, u64 b, Acc c) {
    if constexpr (kBf16)
      return __builtin_amdgcn_mfma_f32_32x32x8bf16_1k(__builtin_bit_cast(i16x4, a),
                                                      __builtin_bit_cast(i16x4, b), c, 0, 0, 0);
    else
      return __builtin_amdgcn_mfma_f32_32x32x8f16(__builtin_bit_cast(f16x4, a),
                                                  __builtin_bit_cast(f16x4, b), c, 0, 0, 0);
  }
};

template <>
struct Mfma<16> {
  using Acc = f32x4;
  static constexpr int kGroups = 4, kDepth = 16, kC = 4;
  template <bool kBf16>
  AE_DEVICE static Acc mma(u64 a, u64 b, Acc c) {
    if constexpr (kBf16)
      return __builtin_amdgcn_mfma_f32_16x16x16bf16_1k(__builtin_bit_cast(i16x4, a),
                                                       __builtin_bit_cast(i16x4, b), c, 0, 0, 0);
    else
      return __builtin_amdgcn_mfma_f32_16x16x16f16(__builtin_bit_cast(f16x4, a),
                                                   __builtin_bit_cast(f16x4, b), c, 0, 0, 0);
  }
};

// The row of C value v within its N x N tile, for lane group g (the column is the lane's j).
template <int N>
AE_DEVICE constexpr int c_row(int v, int g) {
  return 4 * Mfma<N>::kGroups * (v / 4) + 4 * g + v % 4;
}

// Four fp32 values as one operand register pair (16-bit floats, the first in the low half).
template <bool kBf16>
AE_DEVICE u64 pack4(float x0, float x1, float x2, float x3) {
  return static_cast<u64>(pack2<kBf16>(x0, x1)) | static_cast<u64>(pack2<kBf16>(x2, x3)) << 32;
}

}  // namespace ae::gfx90a
