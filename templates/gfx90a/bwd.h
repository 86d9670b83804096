// Backward attention for AMD CDNA2 (gfx90a: MI210, MI250), MFMA 16x16x16 with fp32
// accumulators, wave64; KV-stationary as the sm80 backward: a block of kWaves waves owns
// kBlockN = 16 kWaves keys of one (batch, KV head), each wave 16 of them, and visits the
// (query head, query block) pairs of its GQA group that the block walk keeps.
//
// Keys are the MFMA columns (gfx90a/mfma.h): S = Q K^T and dP = dO V^T take Q and dO rows
// from LDS as A operands and the lane's own key row of K and V, held in registers, as B
// operands. In the C layout a lane then holds one key and 4 queries per tile, so P and dS are
// the B operands of dV^T += dO^T P and dK^T += Q^T dS as they are (A: dO^T and Q^T, stored
// transposed in LDS by gfx90a/bwd_io.h), and dK^T, dV^T accumulate in the lane's registers
// for the whole block. dQ needs dS with queries as columns: dS goes through LDS ([query][key]),
// and each wave computes dQ^T = K^T dS^T for its head-dim tiles over all the block's keys (K^T
// as A operands in registers, loaded once) and adds it into the fp32 dq_accum by atomics,
// unscaled (the dq row pass, common/bwd_rows.h, applies the scale).
// Per score: P recomputed from the row's log2 LSE, dS = P (dP - delta) d score_mod / d score
// (common/bwd_scores.h, the Variant's grad; gradients of captured tensors go to its sink).
// Deterministic (Cfg::kDeterministic): the blocks add into a dQ tile in launch order, key
// blocks from the last (common/dq_order.h), each block's additions one per element.
// Same ABI as the sm80 backward: (AttnParams, VariantArgs).
#pragma once

#include "common/block_walk.h"
#include "common/bwd_scores.h"
#include "common/dq_order.h"
#include "common/kv_layout.h"
#include "common/normalizers.h"
#include "common/params.h"
#include "common/tile_scheduler.h"
#include "gfx90a/bwd_io.h"
#include "gfx90a/mfma.h"
#include "gfx90a/shapes.h"
#include "gfx90a/tile_io.h"

namespace ae::gfx90a {

template <int D_QK_, int D_V_, int BLOCK_M_, int BLOCK_N_, int WAVES_, bool BF16_, class LAYOUT_,
          bool DETERMINISTIC_ = false>
struct BwdConfig {
  using Layout = LAYOUT_;
  static constexpr int kDqk = D_QK_, kDv = D_V_, kBlockM = BLOCK_M_, kBlockN = BLOCK_N_;
  static constexpr int kWaves = WAVES_, kThreads = 64 * kWaves;
  static constexpr bool kBf16 = BF16_, kDeterministic = DETERMINISTIC_;
  // LDS row strides (elements): Q and dO rows, their transposes, dS rows.
  static constexpr int kLdQ = kDqk + kLdsPad, kLdO = kDv + kLdsPad;
  static constexpr int kLdT = kBlockM + kLdsPad, kLdS = kBlockN + kLdsPad;
  static constexpr int kLdsBytes = bwd_lds_bytes(kBlockM, kBlockN, kDqk, kDv);  // the planner's
  static_assert(kLdsBytes == 2 * (kBlockM * kLdQ + kBlockM * kLdO + (kDqk + kDv) * kLdT +
                                  kBlockM * kLdS) + 8 * kBlockM,
                "gfx90a/shapes.h");
  static_assert(kLdsBytes <= kLdsPerCu, "LDS");
  static_assert(kBlockN == kBwdKeysPerWave * kWaves, "16 keys per wave");
  static_assert(kDqk % 16 == 0 && kDv % 16 == 0 && kBlockM % 16 == 0, "tile shapes");
};

template <class Cfg, class Variant>
struct BwdKernel {
  static constexpr int N = kBwdKeysPerWave;
  using M = Mfma<N>;
  using Acc = typename M::Acc;
  using Norm = typename Variant::Norm;
  using Layout = typename Cfg::Layout;
  static_assert(M::kDepth == N, "a tile's 16 queries (keys) are one k-step");
  static constexpr int kMt = Cfg::kBlockM / N;  // query tiles of S, dP; k-steps of dK^T, dV^T
  static constexpr int kQk = Cfg::kDqk / N;     // k-steps of Q K^T, tiles of dK^T
  static constexpr int kVk = Cfg::kDv / N;      // k-steps of dO V^T, tiles of dV^T
  static constexpr int kSk = Cfg::kBlockN / N;  // k-steps of dQ^T = K^T dS^T
  static constexpr int kDt = ceil_div(kQk, Cfg::kWaves);  // dQ^T head-dim tiles per wave
  static constexpr int kLoadGroup = 4;  // LDS operand loads in flight (gfx90a/fwd.h)

  const AttnParams& p;
  const Variant& var;

  // Whether this wave has dQ^T tile i (always when the tiles divide evenly among the waves,
  // which the compiler then sees).
  static AE_DEVICE bool has_dq_tile(int wave, int i) {
    return kQk % Cfg::kWaves == 0 || wave + Cfg::kWaves * i < kQk;
  }

  // S becomes P and dP becomes dS, score by score (common/bwd_scores.h): tile mt's value v is
  // query q0 + 16 mt + 4 g + v of the lane's key.
  template <bool kCheck>
  AE_DEVICE void p_and_ds(Acc (&s)[kMt], Acc (&dp)[kMt], const float* slse, const float* sdelta,
                          int b, int hq, int q0, int key, int g, bool check) {
#pragma unroll
    for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
      for (int v = 0; v < M::kC; ++v) {
        const int ql = N * mt + c_row<N>(v, g);
        float x = s[mt][v], d = dp[mt][v];
        score_backward<kCheck, Layout>(p, var, x, d, slse[ql], sdelta[ql], b, hq, q0 + ql, key,
                                       check);
        s[mt][v] = x;
        dp[mt][v] = d;
      }
  }

  AE_DEVICE void run(char* lds) {
    const int wave = threadIdx.x / 64, lane = threadIdx.x % 64, j = lane % N, g = lane / N;
    const WorkTile tile = Cfg::kDeterministic ? ReversedBlocks::tile(p) : GridOrder::tile(p);
    const int n_block = tile.block, h_kv = tile.head, b = tile.batch;
    const int k0 = n_block * Cfg::kBlockN, key = k0 + wave * N + j;  // this lane's key
    const int q_len = Layout::q_len(p, b), kv_len = Layout::kv_len(p, b);
    if constexpr (Layout::kVarlen)  // past its sequence's keys (never deterministic: no turns)
      if (k0 >= kv_len) return;
    u16* sq = reinterpret_cast<u16*>(lds);         // Q    [query][d]
    u16* sdo = sq + Cfg::kBlockM * Cfg::kLdQ;      // dO   [query][d]
    u16* sqt = sdo + Cfg::kBlockM * Cfg::kLdO;     // Q^T  [d][query]
    u16* sdot = sqt + Cfg::kDqk * Cfg::kLdT;       // dO^T [d][query]
    u16* sds = sdot + Cfg::kDv * Cfg::kLdT;        // dS   [query][key]
    float* slse = reinterpret_cast<float*>(sds + Cfg::kBlockM * Cfg::kLdS);
    float* sdelta = slse + Cfg::kBlockM;
    // This lane's A operands at k-step 0 of its first tile; the rest are constant offsets.
    const u16* q_lane = sq + j * Cfg::kLdQ + 4 * g;
    const u16* do_lane = sdo + j * Cfg::kLdO + 4 * g;
    const u16* qt_lane = sqt + j * Cfg::kLdT + 4 * g;
    const u16* dot_lane = sdot + j * Cfg::kLdT + 4 * g;
    const u16* ds_lane = sds + j * Cfg::kLdS + 4 * g;  // dQ^T's B operand

    // The lane's key row of K and V (B operands of S and dP), and the wave's dQ^T tiles' K^T
    // (A operands), for the whole block.
    u64 kf[kQk], vf[kVk], ktf[kDt][kSk];
    {
      const bool in = key < kv_len;
      row_operands(kf, Layout::kv_row(p, static_cast<const u16*>(p.k), p.k_stride, b, h_kv, in ? key : 0),
                   in, g);
      row_operands(vf, Layout::kv_row(p, static_cast<const u16*>(p.v), p.v_stride, b, h_kv, in ? key : 0),
                   in, g);
      const u16* gk0 = Layout::kv_row(p, static_cast<const u16*>(p.k), p.k_stride, b, h_kv, k0);
#pragma unroll
      for (int i = 0; i < kDt; ++i) {
        const bool has = has_dq_tile(wave, i);
        column_operands(ktf[i], gk0, p.k_stride[2], kv_len - k0,
                        has ? N * (wave + Cfg::kWaves * i) + j : 0, has, g);
      }
    }

    // Packed sequences without a mask: the walk stops at the sequence's own query blocks (a
    // masked one reads the table, whose tiles past the sequence are empty).
    using Walk = ColumnWalkOf<Layout::kVarlen && !Variant::kHasMask>;
    using QBlock = typename Walk::Item;
    Walk walk(p, b, h_kv, n_block, Variant::kHasMask, q_blocks_of<Layout, Cfg::kBlockM>(p, b));
    // Q and dO of the next query block, in registers until the LDS is free; the rows'
    // statistics too (thread i < kBlockM: lse2 of row i, kBlockM <= i < 2 kBlockM: delta).
    TileBoth<Cfg::kBlockM, Cfg::kDqk, Cfg::kThreads> next_q;
    TileBoth<Cfg::kBlockM, Cfg::kDv, Cfg::kThreads> next_do;
    float next_stat = 0.f;
    auto load = [&](QBlock it) {
      const int hq = h_kv * p.group + it.hq_off, q0 = it.mb * Cfg::kBlockM;
      next_q.load(Layout::q_row(p, static_cast<const u16*>(p.q), p.q_stride, b, hq, q0), p.q_stride[2],
                  q_len - q0);
      next_do.load(Layout::q_row(p, static_cast<const u16*>(p.dout), p.do_stride, b, hq, q0),
                   p.do_stride[2], q_len - q0);
      if constexpr (Norm::kRowStats || Norm::kLinearRows) {
        const int i = threadIdx.x % Cfg::kBlockM, row = q0 + i;
        const bool ok = row < q_len && static_cast<int>(threadIdx.x) < 2 * Cfg::kBlockM;
        const float* src = threadIdx.x < Cfg::kBlockM ? p.lse2 : p.delta;
        const float x = src[ok ? Layout::stat(p, b, hq, row) : 0];  // past the rows: 0 (masked)
        next_stat = ok ? x : 0.f;
      }
    };

    QBlock it = walk.pop(p, b, h_kv, n_block), itn = walk.pop(p, b, h_kv, n_block);
    if (it.hq_off < p.group) load(it);

    Acc dk[kQk], dv[kVk];
#pragma unroll
    for (int t = 0; t < kQk; ++t) dk[t] = Acc{};
#pragma unroll
    for (int t = 0; t < kVk; ++t) dv[t] = Acc{};

    while (it.hq_off < p.group) {
      const int hq = h_kv * p.group + it.hq_off, q0 = it.mb * Cfg::kBlockM;
      __syncthreads();  // every wave is done with the last block's LDS
      next_q.store(sq, Cfg::kLdQ, sqt, Cfg::kLdT);
      next_do.store(sdo, Cfg::kLdO, sdot, Cfg::kLdT);
      if (threadIdx.x < 2 * Cfg::kBlockM) slse[threadIdx.x] = next_stat;  // (sdelta follows slse)
      __syncthreads();
      if (itn.hq_off < p.group) load(itn);

      // 1. S = Q K^T and dP = dO V^T for the block's queries and this wave's keys.
      Acc s[kMt], dp[kMt];
#pragma unroll
      for (int mt = 0; mt < kMt; ++mt) s[mt] = dp[mt] = Acc{};
#pragma unroll
      for (int kd = 0; kd < kQk; ++kd) {
#pragma unroll
        for (int mt = 0; mt < kMt; ++mt)
          s[mt] = M::template mma<Cfg::kBf16>(lds_u64(q_lane + N * mt * Cfg::kLdQ + N * kd), kf[kd],
                                              s[mt]);
        if (kd % kLoadGroup == kLoadGroup - 1) lds_fence();
      }
#pragma unroll
      for (int kd = 0; kd < kVk; ++kd) {
#pragma unroll
        for (int mt = 0; mt < kMt; ++mt)
          dp[mt] = M::template mma<Cfg::kBf16>(lds_u64(do_lane + N * mt * Cfg::kLdO + N * kd),
                                               vf[kd], dp[mt]);
        if (kd % kLoadGroup == kLoadGroup - 1) lds_fence();
      }

      // 2. P and dS; dS into LDS for dQ.
      const bool check = q0 + Cfg::kBlockM > q_len || k0 + Cfg::kBlockN > kv_len ||
                         it.code == kBlockPartial;
      if (check)
        p_and_ds<true>(s, dp, slse, sdelta, b, hq, q0, key, g, true);
      else
        p_and_ds<false>(s, dp, slse, sdelta, b, hq, q0, key, g, false);
      u64 pb[kMt], db[kMt];  // B operands: tile mt's 4 values are k-step mt's
#pragma unroll
      for (int mt = 0; mt < kMt; ++mt) {
        pb[mt] = pack4<Cfg::kBf16>(s[mt][0], s[mt][1], s[mt][2], s[mt][3]);
        db[mt] = pack4<Cfg::kBf16>(dp[mt][0], dp[mt][1], dp[mt][2], dp[mt][3]);
#pragma unroll
        for (int v = 0; v < M::kC; ++v)
          sds[(N * mt + c_row<N>(v, g)) * Cfg::kLdS + wave * N + j] =
              static_cast<u16>(db[mt] >> (16 * v));
      }

      // 3. dV^T += dO^T P and dK^T += Q^T dS.
#pragma unroll
      for (int ks = 0; ks < kMt; ++ks)
#pragma unroll
        for (int dt = 0; dt < kVk; ++dt) {
          dv[dt] = M::template mma<Cfg::kBf16>(lds_u64(dot_lane + N * dt * Cfg::kLdT + N * ks),
                                               pb[ks], dv[dt]);
          if ((ks * kVk + dt) % kLoadGroup == kLoadGroup - 1) lds_fence();
        }
#pragma unroll
      for (int ks = 0; ks < kMt; ++ks)
#pragma unroll
        for (int dt = 0; dt < kQk; ++dt) {
          dk[dt] = M::template mma<Cfg::kBf16>(lds_u64(qt_lane + N * dt * Cfg::kLdT + N * ks),
                                               db[ks], dk[dt]);
          if ((ks * kQk + dt) % kLoadGroup == kLoadGroup - 1) lds_fence();
        }
      __syncthreads();  // dS of every wave is in LDS

      // 4. dQ^T = K^T dS^T for this wave's head-dim tiles, added into dq_accum: the lane's
      //    value v of query tile mt is row q0 + 16 mt + j, column 16 dt + 4 g + v (rows past
      //    q_len land in dq_accum's padding).
      float* dq_rows = p.dq_accum + ((static_cast<long long>(b) * p.q_heads + hq) * p.n_q_blocks *
                                         Cfg::kBlockM + q0 + j) * Cfg::kDqk + 4 * g;
      if constexpr (Cfg::kDeterministic) {  // this block's turn at the tile
        if (wave == 0) {
          const int turn = dq_rank(p, b, hq, it.mb, n_block, walk.states);
          if (lane == 0) dq_order_wait(dq_order_at(p, b, hq, it.mb), turn);
        }
        __syncthreads();
      }
#pragma unroll
      for (int i = 0; i < kDt; ++i) {
        if (!has_dq_tile(wave, i)) continue;  // (the same for every lane of the wave)
        Acc dq[kMt];
#pragma unroll
        for (int mt = 0; mt < kMt; ++mt) dq[mt] = Acc{};
#pragma unroll
        for (int ks = 0; ks < kSk; ++ks) {
#pragma unroll
          for (int mt = 0; mt < kMt; ++mt)
            dq[mt] = M::template mma<Cfg::kBf16>(
                ktf[i][ks], lds_u64(ds_lane + N * mt * Cfg::kLdS + N * ks), dq[mt]);
          if (ks % kLoadGroup == kLoadGroup - 1) lds_fence();
        }
        const int col = N * (wave + Cfg::kWaves * i);
#pragma unroll
        for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
          for (int v = 0; v < M::kC; ++v)
            global_add(dq_rows + N * mt * Cfg::kDqk + col + c_row<N>(v, 0), dq[mt][v]);
      }
      if constexpr (Cfg::kDeterministic) {  // the next block's turn once every addition is done
        __threadfence();
        __syncthreads();
        if (threadIdx.x == 0) dq_order_arrive(dq_order_at(p, b, hq, it.mb));
      }
      it = itn;
      itn = walk.pop(p, b, h_kv, n_block);
    }

    // dK (times the softmax scale) and dV of the lane's key: tile dt's value v is column
    // 16 dt + 4 g + v. (No early return: the gradient sink's finish has a barrier.)
    if (key < kv_len) {
      u16* gdk = Layout::kv_row(p, static_cast<u16*>(p.dk), p.dk_stride, b, h_kv, key);
      u16* gdv = Layout::kv_row(p, static_cast<u16*>(p.dv), p.dv_stride, b, h_kv, key);
#pragma unroll
      for (int dt = 0; dt < kQk; ++dt)
        *reinterpret_cast<u64*>(gdk + N * dt + c_row<N>(0, g)) =
            pack4<Cfg::kBf16>(dk[dt][0] * p.scale, dk[dt][1] * p.scale, dk[dt][2] * p.scale,
                              dk[dt][3] * p.scale);
#pragma unroll
      for (int dt = 0; dt < kVk; ++dt)
        *reinterpret_cast<u64*>(gdv + N * dt + c_row<N>(0, g)) =
            pack4<Cfg::kBf16>(dv[dt][0], dv[dt][1], dv[dt][2], dv[dt][3]);
    }
  }
};

template <class Cfg, class Variant>
AE_DEVICE void attention_bwd(const AttnParams& p, const Variant& var) {
  extern __shared__ __attribute__((aligned(16))) char lds[];
  // Captured tensors' gradients (common/variant_support.h): a shared copy, if any, sits past
  // the kernel's own LDS; the first barrier of the block loop orders its zeroing before the
  // first addition.
  var.grads.start(lds + Cfg::kLdsBytes, var.va, threadIdx.x, Cfg::kThreads);
  BwdKernel<Cfg, Variant>{p, var}.run(lds);
  var.grads.finish(var.va, threadIdx.x, Cfg::kThreads, [] { __syncthreads(); });
}

}  // namespace ae::gfx90a
