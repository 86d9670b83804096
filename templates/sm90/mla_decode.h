// MLA decode for Hopper (sm_90a): DeepSeek-V2/V3's multi-head latent attention against a KV
// cache of one latent head, K = [latent | RoPE] (576 columns) and V = K's first 512, the query
// heads (and speculative queries) packed as rows (python/attention_engine/gqa_pack.py).
//
// One CTA owns 64 query rows of one (batch, head) and one split-KV range, with three
// warpgroups:
//   producer  (warpgroup 0): one thread loads Q once, then each block of 64 keys once (all
//             576 columns) into a ring of two stages; V is read from the same tile.
//   consumers (warpgroups 1 and 2): O of 64 rows x 512 columns would not fit one warpgroup's
//             registers, so each owns half of O's columns (256) and half of each block's keys
//             for S = Q K^T (32; all 576 columns deep). A block's softmax needs the whole row:
//             the two exchange their row maxima through shared memory (named barrier 1),
//             agree on the same running max (max is exact, so both compute the same), and
//             write their halves of P to shared memory (named barrier 2), from which each
//             loads all 64 keys of P as the A operand of its O += P V. Each keeps the row sum
//             of its own keys; the two sums are added at the end.
// S of the next block is issued before P V of this one, and the next softmax (up to P's
// store) runs while P V is on the tensor cores. The variant's score_mod and mask, the block
// walk, the layouts (dense, per-batch lengths, paged), split-KV and the check of V at masked
// keys (nvidia/exact_pv.h) are those of the other forwards. Normalization: softmax or none.
// Not persistent; no packed sequences (the planner's).
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

template <int D_QK_, int D_V_, bool BF16_, class LAYOUT_, bool SPLIT_KV_ = false>
struct MlaConfig {
  using Layout = LAYOUT_;
  static constexpr int kDqk = D_QK_, kDv = D_V_;
  static constexpr int kBlockM = kMlaBlockM, kBlockN = kMlaBlockN, kStages = kMlaStages;
  static constexpr int kThreads = 32 * kMlaWarps;
  static constexpr bool kBf16 = BF16_, kSplitKv = SPLIT_KV_;
  // Per consumer warpgroup: keys of S and columns of O.
  static constexpr int kHalfN = kBlockN / 2, kHalfV = kDv / 2;
  // Tiles as TMA writes them with 128-byte swizzle: [D / 64 column blocks][rows][64].
  static constexpr int kQBytes = kBlockM * kDqk * 2, kKBytes = kBlockN * kDqk * 2;
  static constexpr int kPBytes = kBlockM * kBlockN * 2;
  static constexpr int kSmemBytes = mla_smem_bytes(kDqk);  // the planner's
  static_assert(kSmemBytes == 2048 + kQBytes + kStages * kKBytes + kPBytes + 4 * 2 * kBlockM +
                                  8 * (1 + 2 * kStages) + 4 * kStages,
                "sm90/shapes.h");
  static_assert(mla_has(kDqk, kDv) && kDv % 128 == 0 && kDv <= kDqk, "MLA head dims");
  static_assert(kHalfV == 256 && kHalfN == 32, "wgmma N of O (256) and of S (32)");
  static_assert(kBlockN * 2 == 128, "P: one 128-byte row per query row");
  static constexpr bool kPagedLayout = LAYOUT_::kPage > 0;
  // As the forward's split (sm90/fwd.h): 384 threads launch with 168 registers each.
  static constexpr int kProducerRegs = kPagedLayout ? 32 : 24,
                       kConsumerRegs = kPagedLayout ? 232 : 240;
  static constexpr int kLaunchRegs = (65536 / kThreads) & ~7;
  static_assert((kConsumerRegs - kLaunchRegs) * 2 <= kLaunchRegs - kProducerRegs, "registers");
};

template <class Cfg, class Variant>
AE_DEVICE void attention_mla_decode(const AttnParams& p, const Variant& var, const TmaDesc* tq,
                                    const TmaDesc* tk) {
  constexpr int BM = Cfg::kBlockM, BN = Cfg::kBlockN, S = Cfg::kStages, HN = Cfg::kHalfN;
  using Norm = typename Variant::Norm;
  using Layout = typename Cfg::Layout;
  static_assert(!Norm::kCustomFinish, "MLA decode: softmax or none (the planner's)");
  extern __shared__ __align__(1024) char smem_raw[];
  char* s_zero = align_1024(smem_raw);
  char* sQ = s_zero + 1024;
  char* sK = sQ + Cfg::kQBytes;
  char* sP = sK + S * Cfg::kKBytes;  // [64 rows][64 keys], 16-byte chunks swizzled by row % 8
  float* s_row = reinterpret_cast<float*>(sP + Cfg::kPBytes);  // [2 warpgroups][64 rows]
  u64* q_full = reinterpret_cast<u64*>(s_row + 2 * BM);
  u64* k_full = q_full + 1;
  u64* empty = k_full + S;
  // Under a mask the producer tells the consumers which block each stage holds (2 j + 1 if
  // partly masked, 2 j if not; -1: the row is done) before its K-full arrival.
  constexpr bool kList = Variant::kHasMask;
  int* block_list = reinterpret_cast<int*>(empty + S);
  // A paged layout: the producer warp keeps a window of page-table entries past the
  // template's own shared memory (the planner adds 4 * kPageWindow bytes), as sm90/fwd.h.
  constexpr int kPage = Layout::kPage, kPageWindow = 32;
  constexpr int kBox = kPage > 0 && kPage < BN ? kPage : BN;
  // (Pages that whole tiles divide, or that divide a tile: a box never crosses a page's end.)
  static_assert(BN % kBox == 0 && kBox % 8 == 0 &&
                    (kPage == 0 || kPage % BN == 0 || BN % kPage == 0), "key boxes");
  constexpr bool kWarpWide = kList || kPage > 0;
  int* page_win = block_list + S;
  const WorkTile tile = HeadsFastest<Cfg::kSplitKv>::tile(p);

  if (threadIdx.x == 0) {
    mbar_init(q_full, 1);
    for (int s = 0; s < S; ++s) {
      mbar_init(k_full + s, 1);
      mbar_init(empty + s, 256);
    }
    mbar_init_fence();
  }
  if (threadIdx.x < 256) reinterpret_cast<u32*>(s_zero)[threadIdx.x] = 0u;
  fence_view_async_shared();  // the zeros, for wgmma
  __syncthreads();

  const int wg = threadIdx.x / 128;
  if (wg == 0) {  // producer
    setmaxnreg_dec<Cfg::kProducerRegs>();
    if (threadIdx.x < (kWarpWide ? 32 : 1)) {
      const bool leader = threadIdx.x == 0;
      const int h_kv = tile.head / p.group;
      const RowWalk blocks(p, tile.batch, tile.head, tile.block, Variant::kHasMask, Cfg::kSplitKv,
                           tile.split, Layout::kv_blocks(p, tile.batch, BN));
      if (leader) {
        mbar_arrive_expect_tx(q_full, Cfg::kQBytes);
        const auto qr = Layout::q_tma(p, tile.batch, tile.head, tile.block * BM);
#pragma unroll
        for (int c = 0; c < Cfg::kDqk / 64; ++c)
          tma_load_4d(sQ + c * BM * 128, tq, q_full, c * 64, qr.row, qr.head, qr.batch);
      }
      int win = -kPageWindow;  // paged: the table column of page_win[0] (none loaded yet)
      for (int j = blocks.next(blocks.first), it = 0;; j = blocks.next(j + 1), ++it) {
        const bool done = j >= blocks.n;
        if constexpr (kPage > 0) {
          const int c0 = j * BN / kPage, c1 = (j * BN + BN - 1) / kPage;
          if (!done && (c0 < win || c1 >= win + kPageWindow)) {  // (uniform across the warp)
            win = c0;
            __syncwarp();
            page_win[threadIdx.x] = Layout::page(p, tile.batch, win + static_cast<int>(threadIdx.x));
            __syncwarp();
          }
        }
        if ((!done || kList) && leader) {
          const int stage = it % S, use = it / S;
          if (use > 0) mbar_wait(empty + stage, (use - 1) & 1);
          if constexpr (kList) block_list[stage] = done ? -1 : 2 * j + blocks.partial(j);
          if (done) {
            mbar_arrive(k_full + stage);  // the end of the list, with no tile
          } else {
            auto coords = [&](int row) -> typename Layout::TmaRow {
              if constexpr (kPage > 0) return {row % kPage, h_kv, page_win[row / kPage - win]};
              else return Layout::kv_tma(p, tile.batch, h_kv, row);
            };
            mbar_arrive_expect_tx(k_full + stage, Cfg::kKBytes);
#pragma unroll 1
            for (int r0 = 0; r0 < BN; r0 += kBox) {
              const auto kr = coords(j * BN + r0);
#pragma unroll 1
              for (int c = 0; c < Cfg::kDqk / 64; ++c)
                tma_load_4d(sK + stage * Cfg::kKBytes + c * BN * 128 + r0 * 128, tk,
                            k_full + stage, c * 64, kr.row, kr.head, kr.batch);
            }
          }
        }
        if (done) break;
      }
    }
    return;
  }

  // Consumers. From here on no CTA-wide barrier: the producer warps have exited. Named
  // barriers: 1 (row maxima written) and 2 (P written) over both consumer warpgroups, 3 + cw
  // within one (its V check).
  setmaxnreg_inc<Cfg::kConsumerRegs>();
  constexpr int kO8 = Cfg::kHalfV / 8;
  const int cw = wg - 1, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  const int b = tile.batch, h = tile.head;
  const int r_loc = 16 * warp + lane / 4;  // this thread's first row in the tile
  const int row0 = tile.block * BM + r_loc;
  constexpr bool kRaw = Variant::kIdentity && Norm::kRawScores;
  const bool raw_ok = Norm::identity_scale(p) > 0.f;
  const bool v_finite = rows::v_all_finite(p);
  const RowWalk blocks(p, b, h, tile.block, false, Cfg::kSplitKv, tile.split,
                       Layout::kv_blocks(p, b, BN));

  float o[kO8][4];
  rows::RowStats stats;
  stats.init();
#pragma unroll
  for (int i = 0; i < kO8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float s[HN / 8][4];
  u32 pa[BN / 16][4];

  mbar_wait(q_full, 0);
  // S = Q K^T over this warpgroup's 32 keys of the block in ring slot it_ (one commit group).
  auto issue_s = [&](int it_) {
    const int stage = it_ % S;
    mbar_wait(k_full + stage, (it_ / S) & 1);
    wgmma_fence();
    gemm_ss_kmajor<HN, Cfg::kDqk, Cfg::kBf16, true>(s, sQ, BM * 128,
                                              sK + stage * Cfg::kKBytes + cw * HN * 128, BN * 128);
    wgmma_commit();
  };
  auto block_at = [&](int it_) -> int {
    if constexpr (kList) {
      mbar_wait(k_full + it_ % S, (it_ / S) & 1);
      return block_list[it_ % S];
    } else {
      const int j_ = blocks.first + it_;
      return j_ < blocks.n ? 2 * j_ : -1;
    }
  };
  // P's 16-byte chunk c of tile row r, swizzled so that a quad's rows hit distinct banks.
  auto p_at = [&](int r, int key) -> u32* {
    return reinterpret_cast<u32*>(sP + r * 128 + (((key / 8) ^ (r % 8)) * 16) + (key % 8) * 2);
  };
  // The block's score_mod, mask and online step for the scores in s (this warpgroup's keys):
  // the row maxima agreed with the other warpgroup, P written to sP, alpha O's rescale
  // factors. Ends at named barrier 2, after which sP holds the whole block's P.
  auto softmax_block = [&](int code, float (&alpha)[2]) {
    const int kv0 = (code >> 1) * BN, col0 = kv0 + cw * HN + 2 * (lane % 4);
    const bool check = kv0 + BN > Layout::kv_len(p, b) || (code & 1) || (kRaw && !raw_ok);
    if (check)
      rows::score_transform<true, false, Layout, Variant, HN / 8,
                            AE_MASK_LOADS_OR(rows::rows_and_one_column<Variant>())>(
          p, var, s, b, h, row0, col0, &stats);
    else
      rows::score_transform<false, true, Layout>(p, var, s, b, h, row0, col0, &stats);
    const float scale = rows::weight_scale<Variant>(p, kRaw && !check);
    if constexpr (Norm::kRowStats) {
      float mx[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = neg_inf();
#pragma unroll
        for (int nt = 0; nt < HN / 8; ++nt) mx[r] = fmaxf(mx[r], fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
        mx[r] = fmaxf(mx[r], shfl_xor(mx[r], 1));
        mx[r] = fmaxf(mx[r], shfl_xor(mx[r], 2));
        if (lane % 4 == 0) s_row[cw * BM + r_loc + 8 * r] = mx[r];
      }
      named_bar_sync<1>(256);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        // Both warpgroups take the max of the same two values: the same running max.
        const float tile_max = fmaxf(s_row[r_loc + 8 * r], s_row[BM + r_loc + 8 * r]);
        float m_use;
        alpha[r] = Norm::rescale(stats.m[r], tile_max * scale, m_use);
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < HN / 8; ++nt) {
          s[nt][2 * r] = Norm::weight(s[nt][2 * r], scale, m_use);
          s[nt][2 * r + 1] = Norm::weight(s[nt][2 * r + 1], scale, m_use);
          sum += s[nt][2 * r] + s[nt][2 * r + 1];
        }
        stats.l[r] = stats.l[r] * alpha[r] + sum;
      }
    } else {
      alpha[0] = alpha[1] = 1.f;
      // (Still a barrier before P's store: the other warpgroup may be loading the last P.)
      named_bar_sync<1>(256);
    }
#pragma unroll
    for (int nt = 0; nt < HN / 8; ++nt) {
      const int key = cw * HN + nt * 8 + 2 * (lane % 4);
      *p_at(r_loc, key) = pack2<Cfg::kBf16>(s[nt][0], s[nt][1]);
      *p_at(r_loc + 8, key) = pack2<Cfg::kBf16>(s[nt][2], s[nt][3]);
    }
    named_bar_sync<2>(256);
  };
  // The whole block's P from sP as A fragments (p_to_a's layout: keys 16 kk + 2 (lane % 4)
  // in [0] and [1], 8 keys on in [2] and [3]; rows r_loc and r_loc + 8).
  auto load_p = [&] {
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      const int key = 16 * kk + 2 * (lane % 4);
      pa[kk][0] = *p_at(r_loc, key);
      pa[kk][1] = *p_at(r_loc + 8, key);
      pa[kk][2] = *p_at(r_loc, key + 8);
      pa[kk][3] = *p_at(r_loc + 8, key + 8);
    }
  };
  // This warpgroup's V: K's column blocks 4 cw .. 4 cw + 3 of the stage.
  auto v_half = [&](int it_) { return sK + (it_ % S) * Cfg::kKBytes + cw * (Cfg::kHalfV / 64) * BN * 128; };
  // Whether block it_ has masked keys whose V (this warpgroup's half) holds inf or nan, agreed
  // by the warpgroup; such a block's P V is pv_exact_at's, score by score.
  auto v_bad = [&](int it_, int code) -> bool {
    if constexpr (!AE_CHECK_V) return false;
    if (!rows::check_v<Variant>(v_finite, code & 1, (code >> 1) * BN + BN, Layout::kv_len(p, b)))
      return false;
    const bool bad = rows::any_nonfinite<Cfg::kBf16>(v_half(it_), 1, Cfg::kHalfV / 64 * BN * 8,
                                                     0, threadIdx.x % 128, 128);
    return cw == 0 ? named_bar_or<3>(128, bad) : named_bar_or<4>(128, bad);
  };
  auto pv_exact_at = [&](int it_) {
    const char* tV = v_half(it_) + 4 * (lane % 4);
    rows::pv_exact<Cfg::kBf16, BN>(o, pa, [&](int key, int col) {
      const int i = col / 8;
      return *reinterpret_cast<const u32*>(tV + key * 128 + (i / 8) * BN * 128 +
                                           ((16 * (i % 8)) ^ (16 * (key % 8))));
    });
  };
  // O += P V over this warpgroup's 256 columns (exact: pv_exact_at has added it, and B is the
  // zero atom: a select, not a branch around the wgmmas).
  auto issue_pv = [&](int it_, bool exact) {
    const u64 desc = exact ? smem_desc_atom(s_zero) : smem_desc(v_half(it_), BN * 128);
    const u32 step = exact ? 0u : (16 * 128) >> 4;
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) wgmma_rs<Cfg::kHalfV, Cfg::kBf16>(o, pa[kk], desc + kk * step, 1);
    wgmma_commit();
  };

  int it = 0;
  int c = block_at(it);
  if (c >= 0) {
    float alpha[2];  // O is still zero: nothing to rescale
    issue_s(it);
    wgmma_wait<0>();
    fence_regs(s);
    softmax_block(c, alpha);
    load_p();
    for (int cn = block_at(it + 1); cn >= 0; cn = block_at(++it + 1)) {
      const bool exact = v_bad(it, c);
      if (exact) pv_exact_at(it);
      issue_s(it + 1);  // its wgmma_fence also covers the writes to pa and o
      issue_pv(it, exact);
      wgmma_wait<1>();  // S of the next block (committed first) is done
      fence_regs(s);
      softmax_block(cn, alpha);  // under P V: up to P's store
      wgmma_wait<0>();
      fence_regs(o);
      mbar_arrive(empty + it % S);
      rows::rescale_rows_if_moved<Norm>(o, alpha);
      load_p();
      c = cn;
    }
    const bool exact = v_bad(it, c);
    if (exact) pv_exact_at(it);
    wgmma_fence();
    issue_pv(it, exact);
    wgmma_wait<0>();
    fence_regs(o);
    mbar_arrive(empty + it % S);
  }

  // The row sums: this warpgroup's keys' (over the quad), then both (the same order in both).
  float l[2] = {stats.l[0], stats.l[1]};
  if constexpr (Norm::kRowStats) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l[r] += shfl_xor(l[r], 1);
      l[r] += shfl_xor(l[r], 2);
    }
    // (The last block's barrier 2 came after every read of the maxima: s_row is free.)
    if (lane % 4 == 0) s_row[cw * BM + r_loc] = l[0], s_row[cw * BM + r_loc + 8] = l[1];
    named_bar_sync<1>(256);
    l[0] = s_row[r_loc] + s_row[BM + r_loc];
    l[1] = s_row[r_loc + 8] + s_row[BM + r_loc + 8];
  }
  u16* go = Layout::q_row(p, static_cast<u16*>(p.o), p.o_stride, b, h, 0);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + 8 * r;
    if (row >= Layout::q_len(p, b)) continue;
    float scale_o, lse;
    Norm::finish(stats.m[r], l[r], scale_o, lse);
    const int col = cw * Cfg::kHalfV + 2 * (lane % 4);
    if constexpr (Cfg::kSplitKv) {  // this range's O (fp32) and LSE, for the combine
      const long long at = (static_cast<long long>(kv_split_of_cta(p)) * p.batch + b) * p.q_heads + h;
      float* po = p.o_part + (at * p.q_len + row) * p.d_v + col;
#pragma unroll
      for (int i = 0; i < kO8; ++i)
        *reinterpret_cast<float2*>(po + i * 8) =
            make_float2(o[i][2 * r] * scale_o, o[i][2 * r + 1] * scale_o);
      if (cw == 0 && lane % 4 == 0) p.lse_part[at * p.q_len + row] = lse;
    } else {
      u16* orow = go + row * p.o_stride[2] + col;
#pragma unroll
      for (int i = 0; i < kO8; ++i)
        *reinterpret_cast<u32*>(orow + i * 8) =
            pack2<Cfg::kBf16>(o[i][2 * r] * scale_o, o[i][2 * r + 1] * scale_o);
      if (cw == 0 && lane % 4 == 0) p.lse[Layout::stat(p, b, h, row)] = lse;
    }
  }
}

}  // namespace ae::sm90
