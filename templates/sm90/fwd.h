// Forward attention for Hopper (sm_90a): TMA, wgmma and warp specialization.
//
// One CTA owns BLOCK_M = 64 * kConsumers query rows of one (batch, head) and runs
// 1 + kConsumers warpgroups:
//   producer  (warpgroup 0, registers given away by setmaxnreg): one thread issues the TMA
//             loads, Q once, then K and V tiles of BLOCK_N keys into a ring of kStages
//             stages, each completing on its own full barrier (K and V separately, so
//             S = Q K^T starts before V lands);
//   consumers (warpgroups 1 and 2, 64 query rows each): S = Q K^T by wgmma from shared
//             memory, the Variant's score_mod / mask and online softmax on the accumulators
//             (nvidia/mma_rows.h), P converted in registers to wgmma's A operand and
//             O += P V with V read N-major; then the stage is released on its empty
//             barrier. S of the next block is issued together with P V of this one, so
//             the softmax overlaps a GEMM, and the two warpgroups take turns issuing
//             (ping-pong), so one's softmax overlaps the other's GEMMs.
// Tiles the block walk marks empty are skipped by both sides; full tiles skip the mask;
// causal work runs longest rows first (common/tile_scheduler.h). Rows are addressed through
// Cfg::Layout (common/kv_layout.h), the normalization is the Variant's policy.
// Persistent (Cfg::kPersistent, opt-in): the CTA loops over tiles; the producer loads each
// tile's Q when the consumers release the last one's (Q-empty barrier) and passes the tile's
// index in a shared-memory slot; the ring's slots are counted across tiles on both sides.
#pragma once

#include "common/block_walk.h"
#include "common/params.h"
#include "common/tile_scheduler.h"
#include "nvidia/exact_pv.h"
#include "nvidia/mma_rows.h"
#include "sm90/gemm.h"
#include "sm90/hopper_ops.h"
#include "sm90/shapes.h"
#include "sm90/wgmma.h"

namespace ae::sm90 {

template <int D_QK_, int D_V_, int BLOCK_N_, int STAGES_, bool OVERLAP_, bool PINGPONG_, bool BF16_,
          class LAYOUT_, bool SPLIT_KV_ = false, bool PERSISTENT_ = false, bool AHEAD_ = false,
          bool PADDED_ = false>
struct FwdConfig {
  using Layout = LAYOUT_;
  static constexpr int kDqk = D_QK_, kDv = D_V_, kBlockN = BLOCK_N_, kStages = STAGES_;
  // kOverlap: S of block j+1 issued with P V of block j (softmax under a GEMM);
  // kPingPong (with kOverlap): the consumer warpgroups take turns issuing GEMMs.
  static constexpr bool kOverlap = OVERLAP_, kPingPong = PINGPONG_ && OVERLAP_;
  // kSoftmaxAhead (with kOverlap): the softmax of block j+1 kept ahead of the wait for P V of
  // block j by a store of its row sums (hopper_ops.h store_to_sink), so that it runs under
  // that GEMM. Measured faster where the softmax is light next to the GEMMs (head dim 128),
  // slower with a special function per score, at head dim 64 and at 192/128 (not explained;
  // perhaps the two warpgroups' softmaxes then run at once): the planner's table decides
  // (csrc/plan/tile_tables.cc).
  static constexpr bool kSoftmaxAhead = AHEAD_ && OVERLAP_;
  static constexpr bool kBf16 = BF16_;
  // Built for a split-KV launch (AttnParams::kv_splits): partial outputs for the combine.
  static constexpr bool kSplitKv = SPLIT_KV_;
  // A one-wave grid whose CTAs loop over the tiles (common/tile_scheduler.h PersistentTiles):
  // a tile's first K and V, its Q and the last tile's epilogue overlap.
  static constexpr bool kPersistent = PERSISTENT_;
  // The tensors' head dims below kDqk / kDv (csrc/plan/tile_tables.h sm90_padded): TMA reads
  // zeros past their columns, and only theirs are stored (AttnParams d_v).
  static constexpr bool kPadded = PADDED_;
  static_assert(!(kSplitKv && kPersistent), "a split-KV launch is one tile per CTA");
  static constexpr int kConsumers = kFwdConsumers;  // consumer warpgroups, 64 query rows each
  static constexpr int kBlockM = kFwdBlockM, kThreads = 32 * kFwdWarps;
  // Tiles as TMA writes them with 128-byte swizzle: [D / 64 column blocks][rows][64]; before
  // them a 1024-byte atom of zeros (the B operand of P V on a tile that pv_exact adds).
  static constexpr int kQBytes = kBlockM * kDqk * 2, kKBytes = kBlockN * kDqk * 2,
                       kVBytes = kBlockN * kDv * 2;
  // Q full; K full, V full, empty per stage; Q empty
  static constexpr int kBarriers = 2 + 3 * kStages;
  // 1024 bytes of slack to align the tiles to the swizzle pattern's 1024-byte period, and the
  // zero atom.
  static constexpr int kSmemBytes = fwd_smem_bytes(kBlockN, kDqk, kDv, kStages);  // the planner's
  static_assert(kSmemBytes == 2048 + kQBytes + kStages * (kKBytes + kVBytes) + 8 * kBarriers +
                                  8 + 4 * (kStages + 1) &&
                    kBlockM == 64 * kConsumers && kThreads == 128 * (kConsumers + 1),
                "sm90/shapes.h");
  // Register split between the warpgroups (65536 per SM, one CTA per SM).
  // Paged: the producer also keeps the page-table window; at 24 registers it spilled under a
  // mask's block walk (compile-all).
  static constexpr bool kPagedLayout = LAYOUT_::kPage > 0;
  static constexpr int kProducerRegs = kPagedLayout ? 32 : 24,
                       kConsumerRegs = kPagedLayout ? 232 : 240;
  static_assert(kDqk % 64 == 0 && kDv % 64 == 0 && kDqk <= 256, "head dims: multiples of 64");
  // S = Q K^T is one wgmma of N = kBlockN; P V takes the keys 16 at a time.
  static_assert(kBlockN % 16 == 0 && kBlockN >= 64 && kBlockN <= 192, "wgmma N of S");
  static_assert(kDv == 64 || kDv == 128 || kDv == 256, "wgmma N of O");
  static_assert(kConsumers == 2, "the ping-pong pairs two consumer warpgroups");
  // The overlap waits for block it + 1's K while block it's stage is still held.
  static_assert(!kOverlap || kStages >= 2, "the overlap needs two stages");
  // setmaxnreg moves registers within what the CTA was launched with (65536 / kThreads per
  // thread, rounded down to a multiple of 8); an increase that the decreases do not free
  // waits forever.
  static constexpr int kLaunchRegs = (65536 / kThreads) & ~7;
  static_assert((kConsumerRegs - kLaunchRegs) * kConsumers <= kLaunchRegs - kProducerRegs,
                "registers");
};

template <class Cfg, class Variant>
AE_DEVICE void attention_fwd(const AttnParams& p, const Variant& var, const TmaDesc* tq,
                             const TmaDesc* tk, const TmaDesc* tv) {
  constexpr int BM = Cfg::kBlockM, BN = Cfg::kBlockN, S = Cfg::kStages;
  constexpr bool kPersistent = Cfg::kPersistent;
  using Norm = typename Variant::Norm;
  using Layout = typename Cfg::Layout;
  using Tiles = PersistentTiles;
  extern __shared__ __align__(1024) char smem_raw[];
  char* s_zero = align_1024(smem_raw);
  char* sQ = s_zero + 1024;
  char* sK = sQ + Cfg::kQBytes;
  char* sV = sK + S * Cfg::kKBytes;
  u64* q_full = reinterpret_cast<u64*>(sV + S * Cfg::kVBytes);
  u64* k_full = q_full + 1;
  u64* v_full = k_full + S;
  u64* empty = v_full + S;
  u64* q_empty = empty + S;  // the consumers are done with Q (persistent: the next tile's may load)
  // What the consumers store to keep their softmax ahead of P V's wait (never read).
  const u32 s_sink = smem_u32(q_empty + 1);
  // Under a mask the producer walks the blocks and tells the consumers which block each stage
  // holds (j << 8 | its table entry, common/block_walk.h; -1: the row is done) before its
  // K-full arrival, so the consumers' loop reads shared memory where it read the block table.
  constexpr bool kList = Variant::kHasMask;
  // A paged layout (common/kv_layout.h PagedLayout): keys load in boxes of at most a page, at
  // pages read from a window of kPageWindow page-table entries in shared memory (page_win).
  constexpr int kPage = Layout::kPage, kPageWindow = 32;
  constexpr int kBox = kPage > 0 && kPage < BN ? kPage : BN;
  static_assert(BN % kBox == 0 && kBox % 8 == 0 && (kPage == 0 || BN <= kPage * kPageWindow),
                "key boxes");
  constexpr bool kWarpWide = kList || kPage > 0;  // all of the producer's warp 0 in its loop
  int* block_list = reinterpret_cast<int*>(q_empty + 2);
  // Persistent: the tile whose Q the producer loads, written before its Q-full arrival (at or
  // past Tiles::count: no more tiles).
  int* tile_slot = block_list + S;
  // The window lies past the template's own shared memory: the planner gives paged kernels
  // 4 * kPageWindow bytes more (static shared memory would cost up to 1024 bytes, the dynamic
  // block's alignment).
  int* page_win = tile_slot + 1;
  // The tile of a CTA: from the grid (computed before the warpgroups part, as both need it),
  // or (persistent) the t-th of the whole problem.
  const WorkTile grid_tile = kPersistent ? WorkTile{} : HeadsFastest<Cfg::kSplitKv>::tile(p);
  auto tile_of = [&](int t) -> WorkTile {
    if constexpr (kPersistent) return Tiles::at(p, t);
    else return grid_tile;
  };
  // Packed sequences: a tile past its sequence's queries has nothing to do (the grid covers
  // the longest).
  if constexpr (Layout::kVarlen && !kPersistent)
    if (grid_tile.block * BM >= Layout::q_len(p, grid_tile.batch)) return;

  if (threadIdx.x == 0) {
    mbar_init(q_full, 1);
    mbar_init(q_empty, 128 * Cfg::kConsumers);
    for (int s = 0; s < S; ++s) {
      mbar_init(k_full + s, 1);
      mbar_init(v_full + s, 1);
      mbar_init(empty + s, 128 * Cfg::kConsumers);
    }
    mbar_init_fence();
  }
  if (threadIdx.x < 256) reinterpret_cast<u32*>(s_zero)[threadIdx.x] = 0u;
  fence_view_async_shared();  // the zeros, for wgmma
  __syncthreads();

  const int wg = threadIdx.x / 128;
  if (wg == 0) {  // producer
    setmaxnreg_dec<Cfg::kProducerRegs>();
    // Lane 0 loads; under a mask all of warp 0 walks the blocks (the walk is warp-wide), and on
    // a paged layout all of it keeps the page-table window.
    if (threadIdx.x < (kWarpWide ? 32 : 1)) {
      const bool leader = threadIdx.x == 0;
      int it = 0;  // the ring slot, counted across the CTA's tiles
      for (int n = 0, t = kPersistent ? Tiles::first() : 0;; ++n) {
        if (kPersistent && t >= Tiles::count(p)) {  // no more: the consumers read it from the slot
          if (leader) {
            if (n > 0) mbar_wait(q_empty, (n - 1) & 1);
            *tile_slot = t;
            mbar_arrive(q_full);
          }
          break;
        }
        const WorkTile tile = tile_of(t);
        const int h_kv = tile.head / p.group;
        const RowWalk blocks(p, tile.batch, tile.head, tile.block, Variant::kHasMask, Cfg::kSplitKv,
                             tile.split, Layout::kv_blocks(p, tile.batch, BN));
        int win = -kPageWindow;  // paged: the table column of page_win[0] (none loaded yet)
        // Q first on the CTA's first tile; on a later one after the tile's first K and V, which
        // load while the consumers finish the last tile (Q waits until they are done with it).
        auto load_q = [&] {
          if (!leader) return;
          if (n > 0) mbar_wait(q_empty, (n - 1) & 1);
          if constexpr (kPersistent) *tile_slot = t;
          mbar_arrive_expect_tx(q_full, Cfg::kQBytes);
          const auto qr = Layout::q_tma(p, tile.batch, tile.head, tile.block * BM);
#pragma unroll
          for (int c = 0; c < Cfg::kDqk / 64; ++c)
            tma_load_4d(sQ + c * BM * 128, tq, q_full, c * 64, qr.row, qr.head, qr.batch);
        };
        if (n == 0) load_q();
        for (int j = blocks.next(blocks.first), k = 0;; j = blocks.next(j + 1), ++k) {
          const bool done = j >= blocks.n;
          if constexpr (kPage > 0) {
            // The block's pages from the window; the warp loads the next kPageWindow entries
            // (one coalesced load) when it runs past them. A lookup per box instead put a
            // global load's latency before each of the producer's TMA issues.
            const int c0 = j * BN / kPage, c1 = (j * BN + BN - 1) / kPage;
            if (!done && (c0 < win || c1 >= win + kPageWindow)) {  // (uniform across the warp)
              win = c0;
              __syncwarp();
              page_win[threadIdx.x] = Layout::page(p, tile.batch, win + static_cast<int>(threadIdx.x));
              __syncwarp();
            }
          }
          if (!done || kList) {
            if (leader) {
              const int stage = it % S, use = it / S;
              if (use > 0) mbar_wait(empty + stage, (use - 1) & 1);
              if constexpr (kList) block_list[stage] = done ? -1 : j << 8 | blocks.entry(j);
              if (done) {  // the end of the list, with no tile (persistent: V full too, so
                mbar_arrive(k_full + stage);  // that the next tile's waits on the stage
                if constexpr (kPersistent) mbar_arrive(v_full + stage);  // keep step)
              } else {
                // Boxes of kBox rows (paged: a page at most), each at its rows' place in the
                // tile: with 128-byte swizzling a box of rows r0 .. at r0 * 128 bytes (a multiple
                // of the pattern's 1024-byte period) lands as part of the whole box. Coordinates:
                // (row, head, batch), or paged (row in the page, head, page).
                auto coords = [&](int row) -> typename Layout::TmaRow {
                  if constexpr (kPage > 0) return {row % kPage, h_kv, page_win[row / kPage - win]};
                  else return Layout::kv_tma(p, tile.batch, h_kv, row);
                };
                mbar_arrive_expect_tx(k_full + stage, Cfg::kKBytes);
                // (Not unrolled over boxes: the producer has few registers, Cfg::kProducerRegs.)
#pragma unroll 1
                for (int r0 = 0; r0 < BN; r0 += kBox) {
                  const auto kr = coords(j * BN + r0);
#pragma unroll
                  for (int c = 0; c < Cfg::kDqk / 64; ++c)
                    tma_load_4d(sK + stage * Cfg::kKBytes + c * BN * 128 + r0 * 128, tk,
                                k_full + stage, c * 64, kr.row, kr.head, kr.batch);
                }
                mbar_arrive_expect_tx(v_full + stage, Cfg::kVBytes);
#pragma unroll 1
                for (int r0 = 0; r0 < BN; r0 += kBox) {
                  const auto kr = coords(j * BN + r0);
#pragma unroll
                  for (int c = 0; c < Cfg::kDv / 64; ++c)
                    tma_load_4d(sV + stage * Cfg::kVBytes + c * BN * 128 + r0 * 128, tv,
                                v_full + stage, c * 64, kr.row, kr.head, kr.batch);
                }
              }
            }
            ++it;
          }
          if (n > 0 && k == 0) load_q();
          if (done) break;
        }
        if constexpr (!kPersistent) break;
        // The next tile, drawn once this one's loads are issued (about kStages blocks before
        // its consumers finish): a CTA that drew at a tile's start would hold its next tile
        // through a long causal row while other CTAs ran dry.
        if (leader) t = Tiles::next(p);
        if constexpr (kWarpWide) t = __shfl_sync(0xffffffffu, t, 0);
      }
    }
    return;
  }

  // Consumers. From here on no CTA-wide barrier: the producer warps have exited.
  setmaxnreg_inc<Cfg::kConsumerRegs>();
  constexpr int kN8 = BN / 8, kO8 = Cfg::kDv / 8;
  const int cw = wg - 1, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  // Raw plain scores are scaled inside normalize_step's exp2 on unchecked blocks; a scale that
  // is not positive takes the checked path, which scales first.
  constexpr bool kRaw = Variant::kIdentity && Norm::kRawScores;
  const bool raw_ok = Norm::identity_scale(p) > 0.f;
  const bool v_finite = rows::v_all_finite(p);

  // Ping-pong: the two consumer warpgroups take turns issuing their GEMMs (named barriers
  // 1 and 2), so one's softmax runs under the other's GEMMs on the tensor cores.
  auto turn_wait = [&] {
    if constexpr (Cfg::kPingPong) {
      if (cw == 0) named_bar_sync<1>(256);
      else named_bar_sync<2>(256);
    }
  };
  auto turn_pass = [&] {
    if constexpr (Cfg::kPingPong) {
      if (cw == 0) named_bar_arrive<2>(256);
      else named_bar_arrive<1>(256);
    }
  };

  const char* qa = sQ + cw * 64 * 128;  // this warpgroup's 64 rows of every column block
  int it = 0;  // the ring slot, counted across the CTA's tiles as the producer counts it
  for (int n = 0;; ++n) {
    mbar_wait(q_full, n & 1);
    int t = 0;
    if constexpr (kPersistent) {
      t = *tile_slot;
      if (t >= Tiles::count(p)) break;
    }
    const WorkTile tile = tile_of(t);
    const int h = tile.head, b = tile.batch;
    const int row0 = tile.block * BM + 64 * cw + 16 * warp + lane / 4;  // this thread's first row
    // Without a mask the blocks are first .. n - 1 of the tile's range, in ring slots it0 ...
    const RowWalk blocks(p, b, h, tile.block, false, Cfg::kSplitKv, tile.split,
                         Layout::kv_blocks(p, b, BN));
    const int it0 = it;

    float o[kO8][4];
    rows::RowStats stats;
    stats.init();
#pragma unroll
    for (int i = 0; i < kO8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;

    float s[kN8][4];
    u32 pa[BN / 16][4];
    // S = Q K^T of the block in ring slot `it`, issued asynchronously (one commit group).
    auto issue_s = [&](int it_) {
      const int stage = it_ % S;
      const char* tK = sK + stage * Cfg::kKBytes;
      mbar_wait(k_full + stage, (it_ / S) & 1);
      wgmma_fence();
      gemm_ss_kmajor<BN, Cfg::kDqk, Cfg::kBf16>(s, qa, BM * 128, tK, BN * 128);
      wgmma_commit();
    };
    // The block in ring slot it_ as j << 8 | its table entry (common/block_walk.h), or -1 past
    // the row's last block. Under a mask it waits for the slot's K (the producer writes the
    // list entry before that arrival).
    auto block_at = [&](int it_) -> int {
      if constexpr (kList) {
        mbar_wait(k_full + it_ % S, (it_ / S) & 1);
        return block_list[it_ % S];
      } else {
        const int j_ = blocks.first + (it_ - it0);
        return j_ < blocks.n ? j_ << 8 | kBlockFull : -1;
      }
    };
    // This warpgroup's rows of the block need the mask (or keep nothing: without the overlap
    // the loop skips the block, with it the mask drops every score).
    auto masked_here = [&](int code) { return half_code(code & 255, cw) != kBlockFull; };
    // score_mod, mask and the normalization's step on S of block code >> 8 (see block_at); alpha:
    // O's rescale factors.
    // Only key bounds and partial blocks need the checked path: rows past q_len (a tile's tail,
    // decode's 1 row of 128) read zeros from Q, are never stored, and a score_mod's loads are
    // clamped into range.
    auto process_s = [&](int code, float (&alpha)[2]) {
      const int kv0 = (code >> 8) * BN;
      const bool check = kv0 + BN > Layout::kv_len(p, b) || masked_here(code) || (kRaw && !raw_ok);
      if (check)
        rows::score_transform<true, false, Layout, Variant, BN / 8,
                              AE_MASK_LOADS_OR(rows::rows_and_one_column<Variant>())>(
            p, var, s, b, h, row0, kv0 + 2 * (lane % 4), &stats);
      else
        rows::score_transform<false, true, Layout>(p, var, s, b, h, row0, kv0 + 2 * (lane % 4),
                                                   &stats);
      const float scale = rows::weight_scale<Variant>(p, kRaw && !check);
      if constexpr (AE_POOL_BLOCK > 0)  // the gate-training forward
        rows::store_block_max<AE_POOL_BLOCK>(p, s, scale, b, h, row0, kv0);
      rows::normalize_step<Norm>(s, stats, alpha, scale);
    };

    // V of the block in ring slot it_ has landed. The persistent kernel waits before the
    // wgmma_fence that precedes P V (wait_v_early): a wait loop between the fence and the
    // wgmmas makes ptxas inject warpgroup.arrives, which in the persistent kernel's nested
    // loops serialize every wgmma (C7520). The others wait in issue_pv, after the fence: the
    // early wait made the split-KV kernel spill (52 bytes, compile-all).
    auto wait_v = [&](int it_) { mbar_wait(v_full + it_ % S, (it_ / S) & 1); };
    auto wait_v_early = [&](int it_) {
      if constexpr (kPersistent) wait_v(it_);
    };
    // P V of the block in ring slot `it` (P in pa), issued asynchronously (one commit group).
    // exact: pv_exact_at has added P V, and B is the zero atom (O += 0). (A select of the
    // descriptor, not a branch: a wgmma in a branch that ptxas cannot prove uniform makes it
    // serialize every wgmma of the kernel; compile-all checks its log.)
    auto issue_pv = [&](int it_, bool exact) {
      const int stage = it_ % S;
      if constexpr (!kPersistent) wait_v(it_);
      if constexpr (Variant::kLoads) {
        // One descriptor and a step: 16 keys are 16 rows of 128 bytes, (16 * 128) >> 4 in the
        // descriptor's address field (which stays below 2^14: shared memory is under 256 KB);
        // the zero atom's step is 0. Mods that load captured tensors spilled with a select
        // per wgmma (s * base[h] ** 2, causal); the others lost up to 25% with the step form
        // (causal D64), so they keep the select (bench/RESULTS.md, 2026-12-03 tenth session).
        const u64 desc = exact ? smem_desc_atom(s_zero)
                               : smem_desc(sV + stage * Cfg::kVBytes, BN * 128);
        const u32 step = exact ? 0u : (16 * 128) >> 4;
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk)
          wgmma_rs<Cfg::kDv, Cfg::kBf16>(o, pa[kk], desc + kk * step, 1);
      } else {
        const u64 zero = smem_desc_atom(s_zero);
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {  // 16 keys per step: 16 rows of 128 bytes
          const u64 desc = smem_desc(sV + stage * Cfg::kVBytes + kk * 16 * 128, BN * 128);
          wgmma_rs<Cfg::kDv, Cfg::kBf16>(o, pa[kk], exact ? zero : desc, 1);
        }
      }
      wgmma_commit();
    };

    // Whether block `it_` has masked keys whose V holds inf or nan, agreed
    // by the warpgroup (named barrier 3 + cw; it waits for V when it scans); such a block's
    // P V is pv_exact_at's, score by score, not the wgmma (nvidia/exact_pv.h).
    auto v_bad = [&](int it_) -> bool {
      if constexpr (!AE_CHECK_V) return false;
      if (v_finite) return false;  // (before block_at: its wait and load are not free)
      const int code = block_at(it_);  // (its slot is still held: re-read, not kept live)
      if (!rows::check_v<Variant>(v_finite, masked_here(code), (code >> 8) * BN + BN,
                                  Layout::kv_len(p, b)))
        return false;
      const int stage = it_ % S;
      wait_v(it_);
      const bool bad = rows::any_nonfinite<Cfg::kBf16>(sV + stage * Cfg::kVBytes, 1,
                                                       Cfg::kVBytes / 16, 0, threadIdx.x % 128, 128);
      return cw == 0 ? named_bar_or<3>(128, bad) : named_bar_or<4>(128, bad);
    };
    // V as TMA wrote it: [Dv / 64 column blocks][BN keys][128 bytes], the 16-byte chunks of key
    // k's row at chunk ^ (k % 8). col = 8 i + 2 (lane % 4): its block i / 8, chunk i % 8.
    auto pv_exact_at = [&](int it_) {
      const char* tV = sV + (it_ % S) * Cfg::kVBytes + 4 * (lane % 4);
      rows::pv_exact<Cfg::kBf16, BN>(o, pa, [&](int key, int col) {
        const int i = col / 8;
        return *reinterpret_cast<const u32*>(tV + key * 128 + (i / 8) * BN * 128 +
                                             ((16 * (i % 8)) ^ (16 * (key % 8))));
      });
    };

    // After the tile's blocks `it` is the slot past its last block: under a mask the end
    // marker's, released here.
    if constexpr (!Cfg::kOverlap) {
      for (int c = block_at(it); c >= 0; c = block_at(++it)) {
        // This warpgroup's rows keep nothing of the block: no GEMM, the slot released once
        // its V has landed (a release before would let the next load's bytes count toward
        // this one's barrier phase). (The warp's ballot makes the branch uniform to ptxas: on
        // the entry as loaded, it serialized every wgmma, C7520.)
        if (ballot(half_code(c & 255, cw) == kBlockEmpty) != 0) {
          wait_v(it);
          mbar_arrive(empty + it % S);
          continue;
        }
        float alpha[2];
        issue_s(it);
        wgmma_wait<0>();
        fence_regs(s);
        process_s(c, alpha);
        rows::rescale_rows_if_moved<Norm>(o, alpha);
        rows::p_to_a<Cfg::kBf16>(pa, s);
        const bool exact = v_bad(it);
        if (exact) pv_exact_at(it);  // (S is dead here: the registers it needs are free)
        wait_v_early(it);
        wgmma_fence();
        issue_pv(it, exact);
        wgmma_wait<0>();
        fence_regs(o);
        mbar_arrive(empty + it % S);
      }
    } else {
      if (cw == 1) turn_pass();  // the first consumer goes first
      const int c = block_at(it);
      if (c >= 0) {
        float alpha[2];  // O is still zero: nothing to rescale
        issue_s(it);
        wgmma_wait<0>();
        fence_regs(s);
        process_s(c, alpha);
        rows::p_to_a<Cfg::kBf16>(pa, s);
        // Intra-warpgroup overlap: S of the next block is issued with P V of this one, and its
        // softmax runs while P V is still on the tensor cores.
        for (int cn = block_at(it + 1); cn >= 0; cn = block_at(++it + 1)) {
          const bool exact = v_bad(it);
          if (exact) pv_exact_at(it);  // (S is dead here: the registers it needs are free)
          wait_v_early(it);
          turn_wait();
          issue_s(it + 1);  // its wgmma_fence also covers the writes to pa and o
          issue_pv(it, exact);
          turn_pass();
          wgmma_wait<1>();  // S of the next block (committed first) is done
          fence_regs(s);
          process_s(cn, alpha);
          // (Else ptxas waits for P V before this softmax: sm90/hopper_ops.h.)
          if constexpr (Cfg::kSoftmaxAhead) store_to_sink(s_sink, stats.l[0], stats.l[1]);
          wgmma_wait<0>();
          fence_regs(o);
          mbar_arrive(empty + it % S);
          rows::rescale_rows_if_moved<Norm>(o, alpha);
          rows::p_to_a<Cfg::kBf16>(pa, s);
        }
        const bool exact = v_bad(it);
        if (exact) pv_exact_at(it);
        wait_v_early(it);
        turn_wait();  // the last block: P V alone
        wgmma_fence();
        issue_pv(it, exact);
        turn_pass();
        wgmma_wait<0>();
        fence_regs(o);
        mbar_arrive(empty + it % S);
        ++it;
      }
      // The second consumer's last pass. (Before Q's release: the next tile's first pass must
      // not reach barrier 1 before this wait has.)
      if (cw == 0) turn_wait();
    }
    if constexpr (kList && kPersistent) mbar_arrive(empty + it++ % S);  // (the last otherwise)
    if constexpr (kPersistent) mbar_arrive(q_empty);

    rows::store_rows<Cfg::kBf16, Norm, Layout, Cfg::kSplitKv, Cfg::kPadded>(p, var, o, stats, b,
                                                                            h, row0);
    if constexpr (!kPersistent) break;
  }
}

}  // namespace ae::sm90
