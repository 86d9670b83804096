// The emulator's templates/nvidia/mma.h: cp.async copied at once (zeros where not valid),
// ldmatrix and mma.sync m16n8k16 as warp-wide exchanges (tests/emu/cuda_host.h), computed from
// the register layouts the real header states.
#pragma once

#include "common/numeric.h"

namespace ae::sm80 {

AE_DEVICE u32 smem_addr(const void* p) { return static_cast<u32>(__cvta_generic_to_shared(p)); }

AE_DEVICE void cp_async_16(void* smem, const void* gmem, bool valid) {
  if (valid) std::memcpy(smem, gmem, 16);
  else std::memset(smem, 0, 16);
}
AE_DEVICE void cp_async_4(void* smem, const void* gmem, bool valid) {
  if (valid) std::memcpy(smem, gmem, 4);
  else std::memset(smem, 0, 4);
}
AE_DEVICE void cp_async_commit() {}
template <int N>
AE_DEVICE void cp_async_wait() {}

// Lane l gives the address of row l % 8 of matrix l / 8; r[j] of lane l: matrix j's pair at
// row l / 4, columns 2 (l % 4) and + 1 (trans: at column l / 4, rows 2 (l % 4) and + 1).
AE_DEVICE void ldmatrix(u32 (&r)[4], u32 addr, bool trans) {
  u32 all[emu::kLanes];
  emu::all_lanes(addr, all);
  const int l = emu::lane();
  for (int j = 0; j < 4; ++j) {
    u16 e[2];
    for (int i = 0; i < 2; ++i) {
      const int row = trans ? 2 * (l % 4) + i : l / 4, col = trans ? l / 4 : 2 * (l % 4) + i;
      std::memcpy(&e[i], emu::smem + all[8 * j + row] + 2 * col, 2);
    }
    r[j] = e[0] | (static_cast<u32>(e[1]) << 16);
  }
}
AE_DEVICE void ldmatrix_x4(u32 (&r)[4], u32 addr) { ldmatrix(r, addr, false); }
AE_DEVICE void ldmatrix_x4_trans(u32 (&r)[4], u32 addr) { ldmatrix(r, addr, true); }
AE_DEVICE void st_shared_u32(u32 addr, u32 v) { std::memcpy(emu::smem + addr, &v, 4); }

// d += a * b: a (16 x 16, row) a[0] row l / 4, k 2 (l % 4) + {0, 1}, a[1] 8 rows below, a[2]
// and a[3] at k + 8; b (16 x 8, col) b0 k 2 (l % 4) + {0, 1} of column l / 4, b1 at k + 8;
// d[0..1] row l / 4, columns 2 (l % 4) + {0, 1}, d[2..3] 8 rows below.
template <bool kBf16>
AE_DEVICE void mma_16816(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
  struct Lane {
    u32 a[4], b[2];
  } mine{{a[0], a[1], a[2], a[3]}, {b0, b1}}, all[emu::kLanes];
  emu::all_lanes(mine, all);
  auto half = [](u32 w, int i) {
    const u32 bits = i ? w >> 16 : w & 0xffffu;
    if constexpr (kBf16) return __uint_as_float(bits << 16);
    else return static_cast<float>(__builtin_bit_cast(_Float16, static_cast<u16>(bits)));
  };
  auto A = [&](int m, int k) {
    return half(all[(m % 8) * 4 + (k % 8) / 2].a[(m / 8) + 2 * (k / 8)], k % 2);
  };
  auto B = [&](int k, int n) { return half(all[n * 4 + (k % 8) / 2].b[k / 8], k % 2); };
  const int l = emu::lane();
  for (int e = 0; e < 4; ++e) {
    const int m = l / 4 + 8 * (e / 2), n = 2 * (l % 4) + e % 2;
    float sum = d[e];
    for (int k = 0; k < 16; ++k) sum += A(m, k) * B(k, n);
    d[e] = sum;
  }
}

AE_DEVICE void red_add2(float* dst, float x0, float x1) {
  dst[0] += x0;
  dst[1] += x1;
}

}  // namespace ae::sm80
