// O += P V where V may hold inf or nan at keys some rows mask: an MMA multiplies those rows'
// P = 0 by the value, and 0 * inf = nan would turn rows that never read the key into nan.
// Tiles that can hold masked keys (partly masked blocks, the key tail, every block of a
// score_mod that writes -inf: Variant::kScoreMasks) scan their V tile in shared memory; a tile
// with a non-finite value takes pv_exact, which adds P V score by score and skips P = 0,
// instead of the MMA. Other tiles pay nothing; a scanned tile pays the scan.
#pragma once

#include "common/params.h"
#include "nvidia/mma.h"

// AE_EXACT_PV=0 (KernelSpec::trust_v, an A/B switch): the checks compiled out.
#ifndef AE_CHECK_V
#define AE_CHECK_V 1
#endif

namespace ae::rows {

// Whether the V-check pass (common/v_check.h) ran and found V all finite: then no tile needs
// its scan. Read once per CTA (a load per block would sit between the softmax and P V).
AE_DEVICE bool v_all_finite(const AttnParams& p) {
  return AE_CHECK_V && p.v_flag != nullptr && *p.v_flag == 0;
}

// Whether a key tile can hold keys some rows mask, so that its V needs the check: partly
// masked by the mask_mod, past the keys' end, or any tile of a score_mod that writes an
// infinity; unless V is known finite. The one definition every forward uses.
template <class Variant>
AE_DEVICE bool check_v(bool v_finite, bool partial, int kv_end, int kv_len) {
  return AE_CHECK_V && !v_finite && (Variant::kScoreMasks || partial || kv_end > kv_len);
}

// Whether this thread's share of a shared-memory tile holds a non-finite value: rows
// [0, rows) of `chunks` 16-byte chunks each, `ld` bytes apart; thread t of n takes chunks
// t, t + n, ... (the caller combines the threads' answers).
template <bool kBf16>
AE_DEVICE bool any_nonfinite(const char* tile, int rows, int chunks, int ld, int t, int n) {
  bool bad = false;
#pragma unroll 4
  for (int c = t; c < rows * chunks; c += n) {
    const uint4 w = *reinterpret_cast<const uint4*>(tile + (c / chunks) * ld + (c % chunks) * 16);
    bad |= nonfinite2<kBf16>(w.x) | nonfinite2<kBf16>(w.y) | nonfinite2<kBf16>(w.z) |
           nonfinite2<kBf16>(w.w);
  }
  return bad;
}

// O += P V for one 16-row MMA tile, score by score, where P != 0 only. a: the tile's P as A
// fragments of kKeys keys (p_to_a's packing: a[kk][0] row lane / 4 and a[kk][1] row lane / 4
// + 8 hold keys 16 kk + 2 (lane % 4) + {0, 1}; a[kk][2], a[kk][3] the same 8 keys on).
// v(key, col): V's values (col, col + 1) of that key as one 32-bit pair. O in the C layout
// (o[i][0..1]: row lane / 4, columns 8 i + 2 (lane % 4) + {0, 1}; o[i][2..3]: row + 8).
// Rare and slow: a loop over each 16 keys' P, not unrolled, once per 4 column groups of O, so
// that few registers are live beside the kernel's (the sm90 forward holds S, P and O there).
template <bool kBf16, int kKeys, int kO8, class VPair>
AE_DEVICE void pv_exact(float (&o)[kO8][4], const u32 (&a)[kKeys / 16][4], const VPair& v) {
  constexpr int kGroup = kO8 % 4 == 0 ? 4 : kO8;
  const int lane = threadIdx.x % 32, col = 2 * (lane % 4);
#pragma unroll
  for (int i0 = 0; i0 < kO8; i0 += kGroup) {
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
#pragma unroll 1
      for (int e = 0; e < 16; ++e) {  // key 16 kk + e
        const int src = (lane & ~3) | ((e % 8) / 2);  // the quad's lane that holds the key
        const u32 w0 = __shfl_sync(0xffffffffu, e < 8 ? a[kk][0] : a[kk][2], src);
        const u32 w1 = __shfl_sync(0xffffffffu, e < 8 ? a[kk][1] : a[kk][3], src);
        float l0, h0, l1, h1;
        unpack2<kBf16>(w0, l0, h0);
        unpack2<kBf16>(w1, l1, h1);
        const float p0 = (e & 1) ? h0 : l0, p1 = (e & 1) ? h1 : l1;
#pragma unroll
        for (int i = i0; i < i0 + kGroup; ++i) {
          float x, y;
          unpack2<kBf16>(v(16 * kk + e, 8 * i + col), x, y);
          // where P = 0, V's value is taken as 0: selects and unconditional FMAs (a branch
          // that writes wgmma accumulators makes ptxas serialize the sm90 kernel's wgmmas)
          o[i][0] = fmaf(p0, p0 != 0.f ? x : 0.f, o[i][0]);
          o[i][1] = fmaf(p0, p0 != 0.f ? y : 0.f, o[i][1]);
          o[i][2] = fmaf(p1, p1 != 0.f ? x : 0.f, o[i][2]);
          o[i][3] = fmaf(p1, p1 != 0.f ? y : 0.f, o[i][3]);
        }
      }
    }
  }
}

}  // namespace ae::rows
