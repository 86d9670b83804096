// The emulator's templates/sm90/wgmma.h: wgmma.mma_async m64nNk16 as a warpgroup-wide
// exchange (cuda_host.h's fibers). Every thread of the warpgroup hands in its accumulators (and,
// for wgmma_rs, its A fragment); the last to arrive computes D = A B (+ D) from shared memory
// as the descriptors address it and hands every thread its accumulators back. Computed when
// issued, so wgmma_wait is nothing here.
//
// Layouts assumed (sm90/hopper_ops.h smem_desc: start address, LBO, SBO 1024, 128-byte
// swizzle): a K-major operand's row r, element k at start + (r / 8) SBO + (r % 8) 128 + 2 k;
// an MN-major one's (N-major B, M-major A) element (k, n) at start + (k / 8) SBO + (k % 8) 128
// + (n / 64) LBO + 2 (n % 64); the address then swizzled (cuda_host.h swizzle128).
// Accumulators: thread t of the warpgroup (warp w = t / 32, lane l) holds d[j][0..1] of row
// 16 w + l / 4, columns 8 j + 2 (l % 4) + {0, 1}, d[j][2..3] of the row 8 below; a register
// A fragment is mma.sync's (a[0]: row l / 4, k 2 (l % 4) + {0, 1}; a[1] 8 rows below; a[2],
// a[3] the same at k + 8).
#pragma once

#include "common/ae_common.h"

namespace ae::sm90 {

namespace wg_emu {

enum Form { kSS, kRS, kSSMN, kSSKN };

struct Exchange {
  emu::Barrier in{128}, out{128};
  float d[128][128];
  u32 a[128][4];
  u64 da = 0, db = 0;
  int n = 0, accumulate = 0, form = 0;
  bool bf16 = true;
};

// The block's exchanges, one per warpgroup.
AE_DEVICE Exchange& exchange() {
  std::shared_ptr<void>& p = emu::block->state["wgmma"];
  if (!p) p = std::make_shared<std::vector<Exchange>>(blockDim.x / 128);
  return (*static_cast<std::vector<Exchange>*>(p.get()))[threadIdx.x / 128];
}

struct Desc {
  u32 start, lbo, sbo;
};
AE_DEVICE Desc decode(u64 d) {
  if ((d >> 62) != 1) emu::fail("wgmma descriptor without the 128-byte swizzle");
  return {static_cast<u32>(d & 0x3FFF) << 4, static_cast<u32>((d >> 16) & 0x3FFF) << 4,
          static_cast<u32>((d >> 32) & 0x3FFF) << 4};
}
AE_DEVICE float value(u32 bits16, bool bf16) {
  if (bf16) return __uint_as_float(bits16 << 16);
  return static_cast<float>(__builtin_bit_cast(_Float16, static_cast<u16>(bits16)));
}
AE_DEVICE float load(u32 logical, bool bf16) {
  const u32 off = emu::swizzle128(logical);
  if (off + 2 > emu::smem_bytes) emu::fail("wgmma operand past shared memory");
  u16 v;
  std::memcpy(&v, emu::smem + off, 2);
  return value(v, bf16);
}
AE_DEVICE float k_major(const Desc& d, int row, int k, bool bf16) {
  return load(d.start + (row / 8) * d.sbo + (row % 8) * 128 + 2 * k, bf16);
}
AE_DEVICE float mn_major(const Desc& d, int k, int mn, bool bf16) {
  return load(d.start + (k / 8) * d.sbo + (k % 8) * 128 + (mn / 64) * d.lbo + 2 * (mn % 64), bf16);
}

AE_DEVICE void compute(Exchange& x) {
  const Desc da = decode(x.da), db = decode(x.db);
  float A[64][16], B[16][256];
  for (int m = 0; m < 64; ++m)
    for (int k = 0; k < 16; ++k) {
      if (x.form == kRS) {
        const int w = m / 16, r = m % 16, lane = (r % 8) * 4 + (k % 8) / 2;
        const u32 reg = x.a[32 * w + lane][(r / 8) + 2 * (k / 8)];
        A[m][k] = value((k % 2) ? reg >> 16 : reg & 0xffffu, x.bf16);
      } else if (x.form == kSSMN) {
        A[m][k] = mn_major(da, k, m, x.bf16);
      } else {
        A[m][k] = k_major(da, m, k, x.bf16);
      }
    }
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < x.n; ++n)
      B[k][n] = x.form == kSS ? k_major(db, n, k, x.bf16) : mn_major(db, k, n, x.bf16);
  for (int t = 0; t < 128; ++t) {
    const int w = t / 32, l = t % 32;
    for (int j = 0; j < x.n / 8; ++j)
      for (int e = 0; e < 4; ++e) {
        const int m = 16 * w + l / 4 + 8 * (e / 2), n = 8 * j + 2 * (l % 4) + e % 2;
        float sum = x.accumulate ? x.d[t][4 * j + e] : 0.f;
        for (int k = 0; k < 16; ++k) sum += A[m][k] * B[k][n];
        x.d[t][4 * j + e] = sum;
      }
  }
}

template <int N, bool kBf16>
AE_DEVICE void mma(Form form, float (&d)[N / 8][4], const u32* a, u64 da, u64 db, int accumulate) {
  static_assert(N % 8 == 0 && N <= 256, "wgmma N");
  Exchange& x = exchange();
  const int t = threadIdx.x % 128;
  std::memcpy(x.d[t], d, sizeof(d));
  if (a) std::memcpy(x.a[t], a, 16);
  x.da = da, x.db = db, x.n = N, x.accumulate = accumulate, x.form = form, x.bf16 = kBf16;
  if (!x.in.on_phase) x.in.on_phase = [&x] { compute(x); };
  x.in.arrive_and_wait();
  std::memcpy(d, x.d[t], sizeof(d));
  x.out.arrive_and_wait();  // (before the next wgmma's hand-in overwrites the slots)
}

}  // namespace wg_emu

template <int N, bool kBf16>
AE_DEVICE void wgmma_ss(float (&d)[N / 8][4], u64 desc_a, u64 desc_b, int accumulate) {
  wg_emu::mma<N, kBf16>(wg_emu::kSS, d, nullptr, desc_a, desc_b, accumulate);
}
template <int N, bool kBf16>
AE_DEVICE void wgmma_rs(float (&d)[N / 8][4], const u32 (&a)[4], u64 desc_b, int accumulate) {
  // (A from registers: desc_a unused; a valid swizzled descriptor keeps decode() quiet)
  wg_emu::mma<N, kBf16>(wg_emu::kRS, d, a, 1ull << 62, desc_b, accumulate);
}
template <int N, bool kBf16>
AE_DEVICE void wgmma_ss_mn(float (&d)[N / 8][4], u64 desc_a, u64 desc_b, int accumulate) {
  wg_emu::mma<N, kBf16>(wg_emu::kSSMN, d, nullptr, desc_a, desc_b, accumulate);
}
template <int N, bool kBf16>
AE_DEVICE void wgmma_ss_kn(float (&d)[N / 8][4], u64 desc_a, u64 desc_b, int accumulate) {
  wg_emu::mma<N, kBf16>(wg_emu::kSSKN, d, nullptr, desc_a, desc_b, accumulate);
}

}  // namespace ae::sm90
