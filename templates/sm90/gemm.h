// Whole-tile wgmma loops over the tiles as TMA writes them (128-byte swizzle, 16-bit elements:
// [K / 64 column blocks][rows][64]).
#pragma once

#include "sm90/hopper_ops.h"
#include "sm90/wgmma.h"

namespace ae::sm90 {

// acc = A B^T over K = kK, A (64 rows) and B (N rows) both K-major: a and b point at the first
// row each reads in column block 0, a_block and b_block are the bytes between column blocks.
// Issues the wgmmas only (the caller fences, commits and waits). kStep: each operand's
// descriptor built once, made warp-uniform (uniform_desc: a and b must be the same in the
// whole warp) and stepped by adds, which cut the backward's instructions between wgmmas from
// 11-21 to 5 (fwd+bwd up to 2.5% faster at D128); the forward measured 1-4% slower with it at
// D128 (bench/RESULTS.md, 2026-12-03 thirteenth session) and builds each descriptor whole.
template <int N, int kK, bool kBf16, bool kStep = false>
AE_DEVICE void gemm_ss_kmajor(float (&acc)[N / 8][4], const char* a, int a_block, const char* b,
                              int b_block) {
  if constexpr (kStep) {
    const u64 da = uniform_desc(smem_desc(a, 0)), db = uniform_desc(smem_desc(b, 0));
#pragma unroll
    for (int kk = 0; kk < kK / 16; ++kk) {
      const int off = (kk % 4) * 32;  // 16 elements along K inside the 128-byte row
      wgmma_ss<N, kBf16>(acc, desc_plus(da, (kk / 4) * a_block + off),
                         desc_plus(db, (kk / 4) * b_block + off), kk > 0);
    }
  } else {
#pragma unroll
    for (int kk = 0; kk < kK / 16; ++kk) {
      const int off = (kk % 4) * 32;
      wgmma_ss<N, kBf16>(acc, smem_desc(a + (kk / 4) * a_block + off, 0),
                         smem_desc(b + (kk / 4) * b_block + off, 0), kk > 0);
    }
  }
}

}  // namespace ae::sm90
