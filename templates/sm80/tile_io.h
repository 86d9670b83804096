// Global <-> shared tile copies and fragment loads for the mma.sync kernels. Shared tiles
// are row-major with rows padded by 8 elements (16 bytes): ldmatrix then reads 8 rows that
// fall in 8 different bank groups for every head dim used (64, 96, 128, 192, 256).
#pragma once

#include "common/params.h"
#include "nvidia/mma.h"
#include "sm80/shapes.h"

namespace ae::sm80 {

// Copies rows [0, ROWS) x [0, D) of a tile whose row stride is `ld` elements; rows at or
// past `valid_rows` are zero-filled (so garbage never reaches an MMA).
template <int ROWS, int D, int THREADS>
AE_DEVICE void load_tile(u16* smem, const u16* gmem, long long ld, int valid_rows) {
  constexpr int kChunks = D / 8;
#pragma unroll 4
  for (int c = threadIdx.x; c < ROWS * kChunks; c += THREADS) {
    const int r = c / kChunks, col = (c % kChunks) * 8;
    const bool ok = r < valid_rows;
    cp_async_16(smem + r * (D + 8) + col, gmem + (ok ? r : 0) * ld + col, ok);
  }
}

// The same copy for tiles loaded in a loop (K and V in the forward, Q and dO in the
// backward): each thread's rows and shared-memory offsets are fixed, so a tile costs its
// cp.async instructions and a few adds, not load_tile's index math per chunk. Needs whole
// rows per sweep of the threads (D / 8 divides THREADS); where it does not (D 96, 192),
// `kFits` is false and load() is load_tile.
template <int ROWS, int D, int THREADS>
struct TileLoader {
  static constexpr int kChunks = D / 8;  // 16-byte chunks per row
  static constexpr bool kFits = THREADS % kChunks == 0 && ROWS % (THREADS / kChunks) == 0;
  static constexpr int kRowStep = kFits ? THREADS / kChunks : 1;  // rows per sweep
  static constexpr int kIters = ROWS / kRowStep;
  int row0;      // this thread's first row
  int smem_off;  // its first chunk's offset in the shared tile (elements)

  AE_DEVICE TileLoader()
      : row0(static_cast<int>(threadIdx.x) / kChunks),
        smem_off(row0 * (D + 8) + (threadIdx.x % kChunks) * 8) {}

  // Rows at or past valid_rows are zero-filled; kTail = false promises there are none. The
  // global row stride `ld` is passed per call: kept in the kernel parameters, it costs no
  // register between tiles.
  template <bool kTail>
  AE_DEVICE void load(u16* smem, const u16* gmem, long long ld, int valid_rows) const {
    static_assert(kFits, "use load_tile");
    const u16* g = gmem + row0 * ld + (threadIdx.x % kChunks) * 8;
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      const bool ok = !kTail || row0 + i * kRowStep < valid_rows;
      cp_async_16(smem + smem_off + i * kRowStep * (D + 8), ok ? g + i * kRowStep * ld : gmem, ok);
    }
  }
  AE_DEVICE void load(u16* smem, const u16* gmem, long long ld, int valid_rows) const {
    if constexpr (!kFits) load_tile<ROWS, D, THREADS>(smem, gmem, ld, valid_rows);
    else if (valid_rows >= ROWS) load<false>(smem, gmem, ld, valid_rows);
    else load<true>(smem, gmem, ld, valid_rows);
  }

  // A paged K or V tile (common/kv_layout.h PagedLayout<PAGE>): rows kv0 .. kv0 + ROWS of a
  // batch (kv0 a multiple of ROWS) from `head` (Layout::kv_head), each row at its page, which
  // the warp's lanes hold (`pages`: tile_pages). Rows at or past valid_rows, or in no page of
  // the pool, are zero-filled. A thread's rows are kRowStep apart from row0 < kRowStep: where
  // kRowStep divides the page and the tile lies in one page or starts at a page's start, its
  // rows in one page share one shuffle and step their address by the row stride (kRuns: a
  // page * stride + row * stride per row spilled the prefill forward), else each row (D 96,
  // 192: each chunk) has its own. Every lane of the warp must call it (the shuffles).
  template <int PAGE>
  AE_DEVICE void load_paged(u16* smem, const u16* head, const long long (&stride)[3], int pages,
                            int kv0, int valid_rows) const {
    const int c0 = kv0 / PAGE;  // the table column of lane 0's page
    if constexpr (!kFits) {
      constexpr int kSweeps = (ROWS * kChunks + THREADS - 1) / THREADS;
#pragma unroll 4
      for (int k = 0; k < kSweeps; ++k) {
        const int c = threadIdx.x + k * THREADS, r = c / kChunks, col = (c % kChunks) * 8;
        const int pg = __shfl_sync(0xffffffffu, pages, (kv0 + r) / PAGE - c0);
        const bool ok = pg >= 0 && r < valid_rows;
        if (c < ROWS * kChunks)
          cp_async_16(smem + r * (D + 8) + col,
                      ok ? head + pg * stride[0] + ((kv0 + r) % PAGE) * stride[2] + col : head, ok);
      }
    } else {
      constexpr bool kRuns = PAGE % kRowStep == 0 && (ROWS % PAGE == 0 || PAGE % ROWS == 0);
      const u16* g = head + (threadIdx.x % kChunks) * 8;
      const u16* run = g;
      bool in = false;
#pragma unroll
      for (int i = 0; i < kIters; ++i) {
        const int r = kv0 + row0 + i * kRowStep;
        if (!kRuns || (i * kRowStep) % PAGE == 0) {
          const int pg = __shfl_sync(0xffffffffu, pages, r / PAGE - c0);
          in = pg >= 0;
          run = g + (in ? pg : 0) * stride[0] + (r % PAGE) * stride[2];
        } else {
          run += kRowStep * stride[2];
        }
        const bool ok = in && row0 + i * kRowStep < valid_rows;
        cp_async_16(smem + smem_off + i * kRowStep * (D + 8), ok ? run : head, ok);
      }
    }
  }
};

// The pages of a tile of `rows` keys from kv0 (a multiple of rows) in a warp: lane l holds the
// page of table column kv0 / PAGE + l (Layout::pool_page: -1 for none of the pool's), one load
// per lane, which TileLoader::load_paged's rows read by shuffles. The tile's columns must fit
// the warp (sm80/shapes.h paged_tile_columns; the planner keeps to it).
template <class Layout, int ROWS>
AE_DEVICE int tile_pages(const AttnParams& p, const int* table, int kv0) {
  static_assert(paged_tile_columns(ROWS, Layout::kPage) <= 32, "a tile's pages fit a warp");
  return Layout::pool_page(p, table, kv0 / Layout::kPage + static_cast<int>(threadIdx.x % 32));
}

// Fragment reads. Each lane reads from its own address: `at`, the lane's address for the
// fragment at (0, 0) of a tile, made once per kernel by lane_a / lane_nk / lane_kn below
// (32-bit shared-space bytes, smem_addr). The fragment's own offset is a compile-time
// constant in the unrolled loops, which ptxas folds into the instruction ([R + imm]):
// computed per read from a generic pointer, it cost the backward ~1 integer instruction per
// ldmatrix (bench/RESULTS.md).

// For load_a: rows lane % 16, columns 8 (lane / 16) of a 16x16 block, row stride LD.
template <int LD>
AE_DEVICE u32 lane_a(u32 tile) {
  const int lane = threadIdx.x % 32;
  return tile + 2 * ((lane % 16) * LD + (lane / 16) * 8);
}
// For load_b_nk and load_a_t: rows lane % 8 + 8 (lane / 16), columns 8 ((lane / 8) % 2).
template <int LD>
AE_DEVICE u32 lane_nk(u32 tile) {
  const int lane = threadIdx.x % 32;
  return tile + 2 * ((lane % 8 + 8 * (lane / 16)) * LD + 8 * ((lane / 8) % 2));
}
// For load_b_kn: rows lane % 8 + 8 ((lane / 8) % 2), columns 8 (lane / 16).
template <int LD>
AE_DEVICE u32 lane_kn(u32 tile) {
  const int lane = threadIdx.x % 32;
  return tile + 2 * ((lane % 8 + 8 * ((lane / 8) % 2)) * LD + 8 * (lane / 16));
}

// A operand (16 x 16, row-major) at (row0, k0) of a tile with row stride LD; at: lane_a.
template <int LD>
AE_DEVICE void load_a(u32 (&a)[4], u32 at, int row0, int k0) {
  ldmatrix_x4(a, at + 2 * (row0 * LD + k0));
}

// A operand (16 x 16) for rows m0..m0+15 and k0..k0+15 of a tile stored transposed, as
// [k][m] with row stride LD: ldmatrix .trans turns each 8x8 block around on the way.
// at: lane_nk.
template <int LD>
AE_DEVICE void load_a_t(u32 (&a)[4], u32 at, int k0, int m0) {
  ldmatrix_x4_trans(a, at + 2 * (k0 * LD + m0));
}

// B operands of two n8 tiles (rows n0..n0+15 of a [n][k] tile, k0..k0+15):
// r[0], r[1] for rows n0..n0+7; r[2], r[3] for rows n0+8..n0+15. at: lane_nk.
template <int LD>
AE_DEVICE void load_b_nk(u32 (&r)[4], u32 at, int n0, int k0) {
  ldmatrix_x4(r, at + 2 * (n0 * LD + k0));
}

// B operands of two n8 tiles from a [k][n] tile (k0..k0+15, columns n0..n0+15), transposed
// on the way: r[0], r[1] for columns n0..n0+7; r[2], r[3] for n0+8..n0+15. at: lane_kn.
template <int LD>
AE_DEVICE void load_b_kn(u32 (&r)[4], u32 at, int k0, int n0) {
  ldmatrix_x4_trans(r, at + 2 * (k0 * LD + n0));
}

// The A operand (16 rows x 16 k) built from two fp32 accumulator tiles (n8 tiles 2kk and
// 2kk+1 of the same 16 rows): the C layout of m16n8 is the A layout of m16n8k16.
template <bool kBf16>
AE_DEVICE void acc_to_a(u32 (&a)[4], const float (&lo)[4], const float (&hi)[4]) {
  a[0] = pack2<kBf16>(lo[0], lo[1]);
  a[1] = pack2<kBf16>(lo[2], lo[3]);
  a[2] = pack2<kBf16>(hi[0], hi[1]);
  a[3] = pack2<kBf16>(hi[2], hi[3]);
}

}  // namespace ae::sm80
