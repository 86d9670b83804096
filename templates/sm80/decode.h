// Decode forward on the mma.sync path (sm_80 and up): a few query rows against many keys.
//
// One CTA owns one 16-row tile of (batch, head) (decode's rows, or a GQA group's query heads
// packed as rows: python/attention_engine/gqa_pack.py) and a range of its key blocks (all of
// them, or one split-KV range). Its warps split every key block: warp w takes keys
// [w * kWarpKeys, (w + 1) * kWarpKeys) of each BLOCK_N-key block, runs the Variant's
// score_mod, mask and online normalization over its keys alone, and at the end the warps'
// partial rows are merged through shared memory with the split-KV combine's arithmetic
// (common/split_combine.h). The prefill templates give a decode CTA a 64- or 128-row tile for
// 1-16 live rows: compute-bound on rows it throws away. Here the work is the K/V stream, read
// once per CTA through a two-stage cp.async ring, as FlashDecoding does.
#pragma once

#include "common/block_walk.h"
#include "common/params.h"
#include "common/split_combine.h"
#include "common/tile_scheduler.h"
#include "nvidia/exact_pv.h"
#include "nvidia/mma_rows.h"
#include "sm80/shapes.h"
#include "sm80/tile_io.h"

namespace ae::sm80 {

template <int D_QK_, int D_V_, int BLOCK_N_, int WARPS_, bool BF16_, class LAYOUT_,
          bool SPLIT_KV_ = false>
struct DecodeConfig {
  using Layout = LAYOUT_;
  static constexpr int kDqk = D_QK_, kDv = D_V_, kBlockN = BLOCK_N_, kWarps = WARPS_;
  static constexpr bool kBf16 = BF16_;
  static constexpr bool kSplitKv = SPLIT_KV_;  // partial outputs for the combine step
  static constexpr int kBlockM = kDecodeBlockM, kThreads = 32 * kWarps;
  static constexpr int kWarpKeys = kBlockN / kWarps;  // each warp's keys of a block
  static constexpr int kLdQK = kDqk + 8, kLdV = kDv + 8;  // smem row strides (elements)
  static constexpr int kSmemQ = kBlockM * kLdQK, kSmemK = kBlockN * kLdQK, kSmemV = kBlockN * kLdV;
  static constexpr int kSmemBytes = fwd_smem_bytes(kBlockM, kBlockN, kDqk, kDv);  // the planner's
  // The merge: each warp's O rows (fp32, padded) and their LSE, over the K/V ring.
  static constexpr int kLdO = kDv + 4;
  static_assert(4 * kWarps * kBlockM * (kLdO + 1) <= 2 * 2 * (kSmemK + kSmemV), "merge area");
  static_assert(kSmemBytes == 2 * (kSmemQ + 2 * kSmemK + 2 * kSmemV), "sm80/shapes.h");
  static_assert(kDqk % 16 == 0 && kDv % 16 == 0 && kWarpKeys % 16 == 0, "tile shapes");
};

template <class Cfg, class Variant>
AE_DEVICE void attention_decode(const AttnParams& p, const Variant& var) {
  constexpr int BN = Cfg::kBlockN, WK = Cfg::kWarpKeys, kN8 = WK / 8, kO8 = Cfg::kDv / 8;
  constexpr int kLdQK = Cfg::kLdQK, kLdV = Cfg::kLdV;
  using Norm = typename Variant::Norm;
  static_assert(!Norm::kCustomFinish, "decode merges softmax rows only");
  using Layout = typename Cfg::Layout;
  extern __shared__ __align__(16) char smem_raw[];
  u16* sQ = reinterpret_cast<u16*>(smem_raw);
  u16* sK = sQ + Cfg::kSmemQ;
  u16* sV = sK + 2 * Cfg::kSmemK;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const WorkTile tile = HeadsFastest<Cfg::kSplitKv>::tile(p);
  const int b = tile.batch, h = tile.head, q0 = tile.block * Cfg::kBlockM, h_kv = h / p.group;
  if constexpr (Layout::kVarlen)  // past its sequence's queries: nothing to do
    if (q0 >= Layout::q_len(p, b)) return;
  const u16* gk = Layout::kv_head(p, static_cast<const u16*>(p.k), p.k_stride, b, h_kv);
  const u16* gv = Layout::kv_head(p, static_cast<const u16*>(p.v), p.v_stride, b, h_kv);
  const RowWalk blocks(p, b, h, tile.block, Variant::kHasMask, Cfg::kSplitKv, tile.split,
                       Layout::kv_blocks(p, b, BN));
  const int n_kv = blocks.n;
  const TileLoader<BN, Cfg::kDqk, Cfg::kThreads> k_loader;
  const TileLoader<BN, Cfg::kDv, Cfg::kThreads> v_loader;
  auto load_kv = [&](int j, int stage) {  // rows past the keys are zero-filled
    const int rows = Layout::kv_len(p, b) - j * BN;
    if constexpr (Layout::kPage > 0) {  // each row at its page (tile_io.h load_paged)
      const int pages = tile_pages<Layout, BN>(p, Layout::table_row(p, b), j * BN);
      k_loader.template load_paged<Layout::kPage>(sK + stage * Cfg::kSmemK, gk, p.k_stride, pages,
                                                  j * BN, rows);
      v_loader.template load_paged<Layout::kPage>(sV + stage * Cfg::kSmemV, gv, p.v_stride, pages,
                                                  j * BN, rows);
    } else {
      k_loader.load(sK + stage * Cfg::kSmemK, gk + j * BN * p.k_stride[2], p.k_stride[2], rows);
      v_loader.load(sV + stage * Cfg::kSmemV, gv + j * BN * p.v_stride[2], p.v_stride[2], rows);
    }
  };

  int j = blocks.next(blocks.first);
  load_tile<Cfg::kBlockM, Cfg::kDqk, Cfg::kThreads>(
      sQ, Layout::q_row(p, static_cast<const u16*>(p.q), p.q_stride, b, h, q0), p.q_stride[2],
      Layout::q_len(p, b) - q0);
  if (j < n_kv) load_kv(j, 0);
  cp_async_commit();

  // Fragment addresses (tile_io.h): Q's 16 rows; this warp's keys of K and V in stage 0.
  constexpr u32 kStageK = 2 * Cfg::kSmemK, kStageV = 2 * Cfg::kSmemV;
  const u32 q_rows = lane_a<kLdQK>(smem_addr(sQ));
  const u32 k_rows = lane_nk<kLdQK>(smem_addr(sK)) + 2 * warp * WK * kLdQK;
  const u32 v_cols = lane_kn<kLdV>(smem_addr(sV)) + 2 * warp * WK * kLdV;
  const int row0 = q0 + lane / 4;  // this thread's first row

  float o[kO8][4];
#pragma unroll
  for (int i = 0; i < kO8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  rows::RowStats stats;
  stats.init();
  constexpr bool kRaw = Variant::kIdentity && Norm::kRawScores;
  const bool raw_ok = Norm::identity_scale(p) > 0.f;
  const bool v_finite = rows::v_all_finite(p);
  // Q's A fragments stay in registers where they fit next to O.
  constexpr bool kQInRegs = Cfg::kDqk <= 128;
  u32 qf[kQInRegs ? Cfg::kDqk / 16 : 1][4];
  bool q_in_regs = false;

  for (int stage = 0; j < n_kv; stage ^= 1) {
    const int jn = blocks.next(j + 1);
    if (jn < n_kv) load_kv(jn, stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const u32 tK = k_rows + stage * kStageK, tV = v_cols + stage * kStageV;
    if constexpr (kQInRegs) {
      if (!q_in_regs) {
#pragma unroll
        for (int kk = 0; kk < Cfg::kDqk / 16; ++kk) load_a<kLdQK>(qf[kk], q_rows, 0, kk * 16);
        q_in_regs = true;
      }
    }

    float s[kN8][4];
#pragma unroll
    for (int i = 0; i < kN8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < Cfg::kDqk / 16; ++kk) {
      u32 a[4];
      if constexpr (kQInRegs) {
#pragma unroll
        for (int i = 0; i < 4; ++i) a[i] = qf[kk][i];
      } else {
        load_a<kLdQK>(a, q_rows, 0, kk * 16);
      }
#pragma unroll
      for (int np = 0; np < kN8 / 2; ++np) {
        u32 r[4];
        load_b_nk<kLdQK>(r, tK, np * 16, kk * 16);
        mma_16816<Cfg::kBf16>(s[2 * np], a, r[0], r[1]);
        mma_16816<Cfg::kBf16>(s[2 * np + 1], a, r[2], r[3]);
      }
    }

    const int kv0 = j * BN + warp * WK;  // this warp's first key
    const bool check = j * BN + BN > Layout::kv_len(p, b) || blocks.partial(j) || (kRaw && !raw_ok);
    if (check)
      rows::score_transform<true, false, Layout, Variant, kN8,
                            AE_MASK_LOADS_OR(rows::rows_and_one_column<Variant>())>(
          p, var, s, b, h, row0, kv0 + 2 * (lane % 4));
    else
      rows::score_transform<false, true, Layout>(p, var, s, b, h, row0, kv0 + 2 * (lane % 4));
    rows::normalize<Norm>(s, o, stats, rows::weight_scale<Variant>(p, kRaw && !check));

    // A tile with masked keys whose V (this warp's keys) holds inf or nan: exact_pv.h.
    const u16* v_keys = sV + stage * Cfg::kSmemV + warp * WK * kLdV;
    const bool scan =
        rows::check_v<Variant>(v_finite, blocks.partial(j), j * BN + BN, Layout::kv_len(p, b));
    if (scan && __any_sync(0xffffffffu, rows::any_nonfinite<Cfg::kBf16>(
                                            reinterpret_cast<const char*>(v_keys), WK,
                                            Cfg::kDv / 8, 2 * kLdV, lane, 32))) {
      u32 pa[kN8 / 2][4];
      rows::p_to_a<Cfg::kBf16>(pa, s);
      rows::pv_exact<Cfg::kBf16, WK>(o, pa, [&](int key, int col) {
        return *reinterpret_cast<const u32*>(v_keys + key * kLdV + col);
      });
    } else {
#pragma unroll
      for (int kk = 0; kk < WK / 16; ++kk) {
        u32 a[4];
        acc_to_a<Cfg::kBf16>(a, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
        for (int dp = 0; dp < kO8 / 2; ++dp) {
          u32 r[4];
          load_b_kn<kLdV>(r, tV, kk * 16, dp * 16);
          mma_16816<Cfg::kBf16>(o[2 * dp], a, r[0], r[1]);
          mma_16816<Cfg::kBf16>(o[2 * dp + 1], a, r[2], r[3]);
        }
      }
    }
    __syncthreads();  // every warp is done with this stage before it is refilled
    j = jn;
  }
  cp_async_wait<0>();
  __syncthreads();  // the ring becomes the merge area

  // Each warp's rows, normalized over its keys (a warp with nothing kept: O 0, LSE -inf).
  float* mo = reinterpret_cast<float*>(sK);  // [warp][row][kLdO]
  float* mlse = mo + Cfg::kWarps * Cfg::kBlockM * Cfg::kLdO;  // [warp][row]
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = stats.l[r];
    if constexpr (Norm::kRowStats) {
      l += shfl_xor(l, 1);
      l += shfl_xor(l, 2);
    }
    float scale_o, lse;
    Norm::finish(stats.m[r], l, scale_o, lse);
    const int lr = lane / 4 + 8 * r;
    float* dst = mo + (warp * Cfg::kBlockM + lr) * Cfg::kLdO + 2 * (lane % 4);
#pragma unroll
    for (int i = 0; i < kO8; ++i)
      *reinterpret_cast<float2*>(dst + i * 8) = make_float2(o[i][2 * r] * scale_o, o[i][2 * r + 1] * scale_o);
    if (lane % 4 == 0) mlse[warp * Cfg::kBlockM + lr] = lse;
  }
  __syncthreads();

  // Merge, a column pair per thread and step, with the split-KV combine's arithmetic
  // (common/split_combine.h: merged_lse, part_weight).
  constexpr int kPairs = Cfg::kDv / 2;
  const int q_len = Layout::q_len(p, b);
  for (int t = threadIdx.x; t < Cfg::kBlockM * kPairs; t += Cfg::kThreads) {
    const int lr = t / kPairs, c = 2 * (t % kPairs), row = q0 + lr;
    if (row >= q_len) break;  // rows are in order: the rest are past q_len too
    float lse = 0.f;
    if constexpr (Norm::kRowStats) {
      float mx = neg_inf();
#pragma unroll
      for (int w = 0; w < Cfg::kWarps; ++w) mx = fmaxf(mx, mlse[w * Cfg::kBlockM + lr]);
      float sum = 0.f;
      if (mx != neg_inf())
#pragma unroll
        for (int w = 0; w < Cfg::kWarps; ++w) sum += __expf(mlse[w * Cfg::kBlockM + lr] - mx);
      lse = merged_lse(mx, sum);
    }
    float x = 0.f, y = 0.f;
#pragma unroll
    for (int w = 0; w < Cfg::kWarps; ++w) {
      const float wt = part_weight(Norm::kRowStats, mlse[w * Cfg::kBlockM + lr], lse);
      const float2 v = *reinterpret_cast<const float2*>(mo + (w * Cfg::kBlockM + lr) * Cfg::kLdO + c);
      if (wt != 0.f) x = fmaf(wt, v.x, x), y = fmaf(wt, v.y, y);
    }
    if constexpr (Cfg::kSplitKv) {  // this range's O (fp32) and LSE, for the combine step
      const long long at = (static_cast<long long>(kv_split_of_cta(p)) * p.batch + b) * p.q_heads + h;
      *reinterpret_cast<float2*>(p.o_part + (at * p.q_len + row) * p.d_v + c) = make_float2(x, y);
      if (c == 0) p.lse_part[at * p.q_len + row] = lse;
    } else {
      u16* go = Layout::q_row(p, static_cast<u16*>(p.o), p.o_stride, b, h, row);
      *reinterpret_cast<u32*>(go + c) = pack2<Cfg::kBf16>(x, y);
      if (c == 0) p.lse[Layout::stat(p, b, h, row)] = lse;
    }
  }
}

}  // namespace ae::sm80
