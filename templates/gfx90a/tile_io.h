// Global memory -> registers -> LDS for the gfx90a forward: a key block's K and V are loaded
// into registers one block ahead (the loads fly while the current block's MFMAs run) and
// written into LDS after the block before it is done: K as rows [key][d], V transposed as
// [d][key] (the A operand of O^T = V^T P^T reads 4 keys of one d as one 64-bit word). Rows
// past the keys' end are zeros, so nothing undefined reaches an MFMA.
#pragma once

#include "common/numeric.h"
#include "common/params.h"
#include "gfx90a/shapes.h"

namespace ae::gfx90a {

AE_DEVICE u64 lds_u64(const u16* at) { return *reinterpret_cast<const u64*>(at); }

// No memory access moves across it: bounds how far the compiler hoists LDS loads (an empty
// asm that clobbers memory; it emits no instruction).
AE_DEVICE void lds_fence() { asm volatile("" ::: "memory"); }

template <int kBlockN, int kDqk, int kDv, int kThreads>
struct KvPrefetch {
  static constexpr int kLdK = kDqk + kLdsPad, kLdV = kBlockN + kLdsPad;  // LDS row strides
  // K: 16-byte chunks (8 values of one key); V: 4 keys x 4 head-dim values each.
  static constexpr int kKChunks = kBlockN * kDqk / 8, kVBlocks = kBlockN / 4 * (kDv / 4);
  static constexpr int kKPer = ceil_div(kKChunks, kThreads), kVPer = ceil_div(kVBlocks, kThreads);
  static_assert(kDqk % 8 == 0 && kDv % 4 == 0 && kBlockN % 4 == 0, "tile shapes");

  uint4 k[kKPer];
  u64 v[kVPer][4];

  // Key block j: rows j * kBlockN .. of (b, h_kv)'s K and V (kb, vb: their row 0; ldk, ldv:
  // row strides in elements), kv_len keys in all.
  AE_DEVICE void load(const u16* kb, const u16* vb, long long ldk, long long ldv, int j,
                      int kv_len) {
    kb += j * kBlockN * ldk;
    vb += j * kBlockN * ldv;
    load_rows<false>(kb, vb, ldv, [&](int r) { return r * ldk; }, [&](int r) { return r * ldv; },
                     kv_len - j * kBlockN);
  }

  // The same from a paged cache (common/kv_layout.h PagedLayout): row r of the block at its
  // page, table column (j kBlockN + r) / kPage of the batch's row `table`; kh, vh: the head's
  // place in page 0 (Layout::kv_head). Rows whose entry names none of the pool's pages are
  // zeros. A V block's 4 rows share a page (pages are multiples of 8 rows).
  template <class Layout>
  AE_DEVICE void load_paged(const AttnParams& p, const int* table, const u16* kh, const u16* vh,
                            int j, int kv_len) {
    constexpr int kPage = Layout::kPage;
    static_assert(kPage % 8 == 0, "pages of whole 4-row V blocks");
    const int key0 = j * kBlockN;
    auto at = [&](long long page_stride, long long ld) {
      return [&p, table, key0, page_stride, ld](int r) -> long long {
        const int key = key0 + r, pg = Layout::pool_page(p, table, key / kPage);
        return pg < 0 ? -1 : pg * page_stride + (key % kPage) * ld;
      };
    };
    load_rows<true>(kh, vh, p.v_stride[2], at(p.k_stride[0], p.k_stride[2]),
                    at(p.v_stride[0], p.v_stride[2]), kv_len - key0);
  }

  // Rows 0 .. rows - 1 of a block (kb, vb: where k_at(r) and v_at(r), element offsets, count
  // from; V's rows ldv apart within a 4-row block). kMayMiss: an offset may be -1, a row of
  // zeros. Rows past the end read kb's and vb's first element (valid) and are zeroed after: a
  // select, where a load under `ok` was a branch around every load.
  template <bool kMayMiss, class KAt, class VAt>
  AE_DEVICE void load_rows(const u16* kb, const u16* vb, long long ldv, KAt k_at, VAt v_at,
                           int rows) {
#pragma unroll
    for (int i = 0; i < kKPer; ++i) {
      const int c = static_cast<int>(threadIdx.x) + i * kThreads;
      const int r = c / (kDqk / 8), col = c % (kDqk / 8) * 8;
      bool ok = (kKChunks % kThreads == 0 || c < kKChunks) && r < rows;
      const long long off = ok ? k_at(r) : 0;
      if constexpr (kMayMiss) ok = ok && off >= 0;
      const uint4 x = *reinterpret_cast<const uint4*>(kb + (ok ? off + col : 0));
      k[i] = ok ? x : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int i = 0; i < kVPer; ++i) {
      const int c = static_cast<int>(threadIdx.x) + i * kThreads;
      const int r = c / (kDv / 4) * 4, col = c % (kDv / 4) * 4;
      bool in = (kVBlocks % kThreads == 0 || c < kVBlocks) && r < rows;
      const long long off = in ? v_at(r) : 0;
      if constexpr (kMayMiss) in = in && off >= 0;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool ok = in && r + e < rows;
        const u64 x = *reinterpret_cast<const u64*>(vb + (ok ? off + e * ldv + col : 0));
        v[i][e] = ok ? x : 0;
      }
    }
  }

  // The registers into LDS: sk [kBlockN][kLdK], svt [kDv][kLdV]. K's rows are 8-byte aligned
  // (the padding), so a chunk is two 64-bit stores.
  AE_DEVICE void store(u16* sk, u16* svt) const {
#pragma unroll
    for (int i = 0; i < kKPer; ++i) {
      const int c = static_cast<int>(threadIdx.x) + i * kThreads;
      if (kKChunks % kThreads != 0 && c >= kKChunks) break;
      u64* at = reinterpret_cast<u64*>(sk + c / (kDqk / 8) * kLdK + c % (kDqk / 8) * 8);
      at[0] = static_cast<u64>(k[i].x) | static_cast<u64>(k[i].y) << 32;
      at[1] = static_cast<u64>(k[i].z) | static_cast<u64>(k[i].w) << 32;
    }
#pragma unroll
    for (int i = 0; i < kVPer; ++i) {
      const int c = static_cast<int>(threadIdx.x) + i * kThreads;
      if (kVBlocks % kThreads != 0 && c >= kVBlocks) break;
      const int r = c / (kDv / 4) * 4, col = c % (kDv / 4) * 4;
      // 4 x 4 transpose: value d of key e is bits 16 d of v[i][e]; row col + d of V^T gets
      // keys r .. r + 3.
#pragma unroll
      for (int d = 0; d < 4; ++d) {
        u64 w = 0;
#pragma unroll
        for (int e = 0; e < 4; ++e) w |= (v[i][e] >> (16 * d) & 0xffffu) << (16 * e);
        *reinterpret_cast<u64*>(svt + (col + d) * kLdV + r) = w;
      }
    }
  }
};

// An operand's four 16-bit values with the non-finite ones (exponent all ones) set to 0.
template <bool kBf16>
AE_DEVICE u64 finite4(u64 w) {
  constexpr u64 e = kBf16 ? 0x7f80u : 0x7c00u;
  u64 keep = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i)
    if ((w >> (16 * i) & e) != e) keep |= 0xffffull << (16 * i);
  return w & keep;
}

// Whether this thread's share of V^T (kDv rows of kBlockN keys in LDS, row stride kLdV) holds
// an inf or nan: its exponent all ones. Thread t of n takes 64-bit words t, t + n, ...
template <bool kBf16, int kBlockN, int kDv, int kLdV>
AE_DEVICE bool any_nonfinite(const u16* svt, int t, int n) {
  constexpr u64 e = kBf16 ? 0x7f80u : 0x7c00u;
  constexpr u64 mask = e | e << 16 | e << 32 | e << 48;
  constexpr int kWords = kBlockN / 4;
  bool bad = false;
  for (int c = t; c < kDv * kWords; c += n) {
    const u64 w = lds_u64(svt + c / kWords * kLdV + c % kWords * 4) & mask;
    bad |= (w & e) == e || (w & e << 16) == e << 16 || (w & e << 32) == e << 32 ||
           (w & e << 48) == e << 48;
  }
  return bad;
}

}  // namespace ae::gfx90a
