// The forward's V-check pass: whether V holds inf or nan anywhere the forward reads (batch x
// kv_heads x kv_len rows of d_v values). A masked score's P is 0, and an MMA would turn
// 0 * inf into nan, so the forwards scan the V tile of every tile with masked keys
// (nvidia/exact_pv.h); one pass over V per call lets them skip those scans where V is all
// finite, the usual case. Sets *p.v_flag to 1 where a non-finite value is found (the flag is
// zeroed before the launch). One thread per 16-byte chunk of a row: d_v is a multiple of 8 and
// rows are 16-byte aligned (as the forwards' own loads need). Grid: x over each head's rows,
// y over batch x kv_heads (strided past the grid).
#pragma once

#include "common/ae_common.h"
#include "common/numeric.h"
#include "common/params.h"

namespace ae {

template <bool kBf16>
AE_DEVICE void v_check(const AttnParams& p) {
  const int chunks = p.d_v / 8;
  const int rows_per_cta = static_cast<int>(blockDim.x) / chunks;
  const int row = static_cast<int>(threadIdx.x) / chunks;
  const int c = static_cast<int>(threadIdx.x) % chunks;
  const long long heads = static_cast<long long>(p.batch) * p.kv_heads;
  bool bad = false;
  if (row < rows_per_cta) {
    for (long long bh = blockIdx.y; bh < heads; bh += gridDim.y) {
      const long long b = bh / p.kv_heads, h = bh % p.kv_heads;
      const char* base = static_cast<const char*>(p.v) +
                         2 * (b * p.v_stride[0] + h * p.v_stride[1]) + 16 * c;
      const long long step = static_cast<long long>(gridDim.x) * rows_per_cta;
#pragma unroll 4
      for (long long s = static_cast<long long>(blockIdx.x) * rows_per_cta + row; s < p.kv_len;
           s += step) {
        const uint4 w = *reinterpret_cast<const uint4*>(base + 2 * s * p.v_stride[2]);
        bad |= nonfinite2<kBf16>(w.x) | nonfinite2<kBf16>(w.y) | nonfinite2<kBf16>(w.z) |
               nonfinite2<kBf16>(w.w);
      }
    }
  }
  if (__syncthreads_or(bad) && threadIdx.x == 0) *p.v_flag = 1;
}

}  // namespace ae
