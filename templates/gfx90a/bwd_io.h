// Global memory -> registers -> LDS for the gfx90a backward: a query block's Q (or dO) is
// loaded into registers one block ahead, in 4 x 4 blocks of 16-bit values, and written into
// LDS twice: as rows [row][d] (the A operand of S = Q K^T reads 4 head-dim values of a row)
// and transposed [d][row] (the A operand of dK^T = Q^T dS reads 4 rows of one d). Rows past
// the block's valid rows are zeros. Also the wave's own key rows as MFMA operands, once per
// block of keys.
#pragma once

#include "common/numeric.h"
#include "gfx90a/mfma.h"
#include "gfx90a/shapes.h"
#include "gfx90a/tile_io.h"

namespace ae::gfx90a {

// An fp32 addition into global memory by CDNA2's global_atomic_add_f32 (atomicAdd, without
// -munsafe-fp-atomics, is a compare-and-swap loop). For device memory (hipMalloc'd, as torch's
// tensors and the plan's workspaces), not fine-grained host memory.
AE_DEVICE void global_add(float* at, float x) {
#if defined(__gfx90a__)
  __builtin_amdgcn_global_atomic_fadd_f32((__attribute__((address_space(1))) float*)at, x);
#else
  atomicAdd(at, x);
#endif
}

template <int kRows, int kCols, int kThreads>
struct TileBoth {
  static constexpr int kBlocks = kRows / 4 * (kCols / 4);
  static constexpr int kPer = ceil_div(kBlocks, kThreads);
  static_assert(kRows % 4 == 0 && kCols % 4 == 0, "tile shapes");

  u64 w[kPer][4];  // block i: its 4 rows, 4 values each

  static AE_DEVICE bool has(int c) { return kBlocks % kThreads == 0 || c < kBlocks; }

  // g: the tile's row 0 (a valid row), ld: the row stride in elements, rows: valid rows.
  AE_DEVICE void load(const u16* g, long long ld, int rows) {
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int c = static_cast<int>(threadIdx.x) + i * kThreads;
      const int r = c / (kCols / 4) * 4, col = c % (kCols / 4) * 4;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool ok = has(c) && r + e < rows;  // else row 0 is read and zeroed (a select)
        const u64 x = *reinterpret_cast<const u64*>(g + (ok ? (r + e) * ld + col : 0));
        w[i][e] = ok ? x : 0;
      }
    }
  }

  // Into s [kRows][lds] and st [kCols][ldt] (strides in elements, multiples of 4).
  AE_DEVICE void store(u16* s, int lds, u16* st, int ldt) const {
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int c = static_cast<int>(threadIdx.x) + i * kThreads;
      if (!has(c)) break;
      const int r = c / (kCols / 4) * 4, col = c % (kCols / 4) * 4;
#pragma unroll
      for (int e = 0; e < 4; ++e) *reinterpret_cast<u64*>(s + (r + e) * lds + col) = w[i][e];
#pragma unroll
      for (int d = 0; d < 4; ++d) {  // value d of row e is bits 16 d of w[i][e]
        u64 t = 0;
#pragma unroll
        for (int e = 0; e < 4; ++e) t |= (w[i][e] >> (16 * d) & 0xffffu) << (16 * e);
        *reinterpret_cast<u64*>(st + (col + d) * ldt + r) = t;
      }
    }
  }
};

// A key row as B operands (K of S = Q K^T, V of dP = dO V^T: B[4 g + t][j] is value 4 g + t
// of key j): k-step kd < kSteps holds head-dim values 16 kd + 4 g .. + 3 of `row` (zeros unless
// `in`; row is then any valid row).
template <int kSteps>
AE_DEVICE void row_operands(u64* f, const u16* row, bool in, int g) {
#pragma unroll
  for (int kd = 0; kd < kSteps; ++kd) {
    const u64 x = *reinterpret_cast<const u64*>(row + 16 * kd + 4 * g);
    f[kd] = in ? x : 0;
  }
}

// K^T as A operands (dQ^T = K^T dS^T: A[j][4 g + t] is key 4 g + t of head-dim column j):
// k-step ks holds column `col` of keys 16 ks + 4 g .. + 3 from the block's first key row k0
// (row stride ld; keys from `rows` on are zeros, as is everything unless `in`).
template <int kSteps>
AE_DEVICE void column_operands(u64 (&f)[kSteps], const u16* k0, long long ld, int rows, int col,
                               bool in, int g) {
#pragma unroll
  for (int ks = 0; ks < kSteps; ++ks) {
    u64 w = 0;
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      const int r = 16 * ks + 4 * g + t;
      const bool ok = in && r < rows;
      const u64 x = k0[ok ? r * ld + col : 0];
      w |= (ok ? x : 0) << (16 * t);
    }
    f[ks] = w;
  }
}

}  // namespace ae::gfx90a
