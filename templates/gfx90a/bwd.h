// Backward attention for AMD CDNA2 (gfx90a: MI210, MI250), MFMA 16x16x16 with fp32
// accumulators, wave64; KV-stationary as the sm80 backward: a block of kWaves waves owns
// kBlockN = 16 kWaves keys of one (batch, KV head), each wave 16 of them (past head dim 128
// each pair of waves: below), and visits the (query head, query block) pairs of its GQA group
// that the block walk keeps.
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
// Past head dim 128 (Cfg::kPaired, gfx90a/shapes.h bwd_paired) a wave's K, V, dK^T and dV^T
// rows would not fit its registers: waves w and w + kWaves / 2 share 16 keys. Wave A (the
// first half) holds the keys' K row and dV^T and computes S, P, dS and dV^T; wave B holds the
// V row and dK^T and computes dP, which it passes to A through LDS (fp32, in the C layout: a
// lane's slot is its partner's), and dK^T from the dS that A leaves in the same slot. dQ is
// as above, over the block's 8 kWaves keys.
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
  static constexpr bool kPaired = bwd_paired(kDqk, kDv);
  // LDS row strides (elements): Q and dO rows, their transposes, dS rows.
  static constexpr int kLdQ = kDqk + kLdsPad, kLdO = kDv + kLdsPad;
  static constexpr int kLdT = kBlockM + kLdsPad, kLdS = kBlockN + kLdsPad;
  static constexpr int kLdsBytes = bwd_lds_bytes(kBlockM, kBlockN, kDqk, kDv);  // the planner's
  static_assert(kLdsBytes == 2 * (kBlockM * kLdQ + kBlockM * kLdO + (kDqk + kDv) * kLdT +
                                  kBlockM * kLdS) + 8 * kBlockM +
                                 (kPaired ? 4 * kBlockM * kBlockN : 0),
                "gfx90a/shapes.h");
  static_assert(kLdsBytes <= kLdsPerCu, "LDS");
  static_assert(kBlockN == bwd_block_n(kWaves, kDqk, kDv), "16 keys per wave or pair of waves");
  static_assert(!kPaired || kWaves % 2 == 0, "pairs of waves");
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
  static constexpr bool kPaired = Cfg::kPaired;
  static constexpr int kPairs = Cfg::kWaves / 2;
  // Operand and accumulator tiles per lane: K and V rows, dK^T and dV^T apart; paired waves
  // one of each in `own` and `acc`, the wider of the two.
  static constexpr int kOwn = kPaired ? (kQk > kVk ? kQk : kVk) : 1;
  static constexpr int kKt = kPaired ? 1 : kQk, kVt = kPaired ? 1 : kVk;

  const AttnParams& p;
  const Variant& var;

  // Whether this wave has dQ^T tile i (always when the tiles divide evenly among the waves,
  // which the compiler then sees).
  static AE_DEVICE bool has_dq_tile(int wave, int i) {
    return kQk % Cfg::kWaves == 0 || wave + Cfg::kWaves * i < kQk;
  }

  // c[mt] += A B over kSteps k-steps: A from LDS rows (a_lane: the lane's first operand, ld the
  // row stride; query tile mt, k-step kd at 16 mt rows and 16 kd columns on), B f[kd].
  template <int kSteps>
  static AE_DEVICE void times_rows(Acc (&c)[kMt], const u16* a_lane, int ld, const u64* f) {
#pragma unroll
    for (int kd = 0; kd < kSteps; ++kd) {
#pragma unroll
      for (int mt = 0; mt < kMt; ++mt)
        c[mt] = M::template mma<Cfg::kBf16>(lds_u64(a_lane + N * mt * ld + N * kd), f[kd], c[mt]);
      if (kd % kLoadGroup == kLoadGroup - 1) lds_fence();
    }
  }

  // acc[dt] += A B for kTiles head-dim tiles: A from transposed LDS (at_lane: the lane's first
  // operand; tile dt, k-step ks at 16 dt rows and 16 ks columns on), B the score operands b[ks].
  template <int kTiles>
  static AE_DEVICE void times_scores(Acc* acc, const u16* at_lane, const u64 (&b)[kMt]) {
#pragma unroll
    for (int ks = 0; ks < kMt; ++ks)
#pragma unroll
      for (int dt = 0; dt < kTiles; ++dt) {
        acc[dt] = M::template mma<Cfg::kBf16>(lds_u64(at_lane + N * dt * Cfg::kLdT + N * ks), b[ks],
                                              acc[dt]);
        if ((ks * kTiles + dt) % kLoadGroup == kLoadGroup - 1) lds_fence();
      }
  }

  // A key's row of dK or dV from kTiles accumulator tiles: tile dt's value v is column
  // 16 dt + 4 g + v.
  template <int kTiles>
  static AE_DEVICE void store_row(u16* row, const Acc* acc, float scale, int g) {
#pragma unroll
    for (int dt = 0; dt < kTiles; ++dt)
      *reinterpret_cast<u64*>(row + N * dt + c_row<N>(0, g)) =
          pack4<Cfg::kBf16>(acc[dt][0] * scale, acc[dt][1] * scale, acc[dt][2] * scale,
                            acc[dt][3] * scale);
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
    const int keys = kPaired ? wave % kPairs : wave;  // the wave's 16 keys within the block
    const bool wave_a = !kPaired || wave < kPairs;    // paired: S, dS, dV^T (else dP, dK^T)
    const WorkTile tile = Cfg::kDeterministic ? ReversedBlocks::tile(p) : GridOrder::tile(p);
    const int n_block = tile.block, h_kv = tile.head, b = tile.batch;
    const int k0 = n_block * Cfg::kBlockN, key = k0 + keys * N + j;  // this lane's key
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
    // Paired: the lane's exchange slot per query tile (tile mt at xch[64 mt]), its partner's too.
    Acc* xch = reinterpret_cast<Acc*>(sdelta + Cfg::kBlockM) + keys * kMt * 64 + lane;
    // This lane's A operands at k-step 0 of its first tile; the rest are constant offsets.
    const u16* q_lane = sq + j * Cfg::kLdQ + 4 * g;
    const u16* do_lane = sdo + j * Cfg::kLdO + 4 * g;
    const u16* qt_lane = sqt + j * Cfg::kLdT + 4 * g;
    const u16* dot_lane = sdot + j * Cfg::kLdT + 4 * g;
    const u16* ds_lane = sds + j * Cfg::kLdS + 4 * g;  // dQ^T's B operand

    // The lane's key row of K and V (B operands of S and dP; paired: wave A's K, B's V), and
    // the wave's dQ^T tiles' K^T (A operands), for the whole block.
    u64 kf[kKt], vf[kVt], own[kOwn], ktf[kDt][kSk];
    {
      const bool in = key < kv_len;
      const int row = in ? key : 0;
      const u16* krow = Layout::kv_row(p, static_cast<const u16*>(p.k), p.k_stride, b, h_kv, row);
      const u16* vrow = Layout::kv_row(p, static_cast<const u16*>(p.v), p.v_stride, b, h_kv, row);
      if constexpr (kPaired) {
        if (wave_a)
          row_operands<kQk>(own, krow, in, g);
        else
          row_operands<kVk>(own, vrow, in, g);
      } else {
        row_operands<kQk>(kf, krow, in, g);
        row_operands<kVk>(vf, vrow, in, g);
      }
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

    Acc dk[kKt], dv[kVt], acc[kOwn];  // paired: wave A's dV^T, B's dK^T in acc
#pragma unroll
    for (int t = 0; t < kKt; ++t) dk[t] = Acc{};
#pragma unroll
    for (int t = 0; t < kVt; ++t) dv[t] = Acc{};
#pragma unroll
    for (int t = 0; t < kOwn; ++t) acc[t] = Acc{};

    while (it.hq_off < p.group) {
      const int hq = h_kv * p.group + it.hq_off, q0 = it.mb * Cfg::kBlockM;
      __syncthreads();  // every wave is done with the last block's LDS
      next_q.store(sq, Cfg::kLdQ, sqt, Cfg::kLdT);
      next_do.store(sdo, Cfg::kLdO, sdot, Cfg::kLdT);
      if (threadIdx.x < 2 * Cfg::kBlockM) slse[threadIdx.x] = next_stat;  // (sdelta follows slse)
      __syncthreads();
      if (itn.hq_off < p.group) load(itn);

      const bool check = q0 + Cfg::kBlockM > q_len || k0 + Cfg::kBlockN > kv_len ||
                         it.code == kBlockPartial;
      if constexpr (kPaired) {
        // 1. Wave A: S = Q K^T; B: dP = dO V^T, into the exchange slots.
        Acc x[kMt];
#pragma unroll
        for (int mt = 0; mt < kMt; ++mt) x[mt] = Acc{};
        if (wave_a) {
          times_rows<kQk>(x, q_lane, Cfg::kLdQ, own);
        } else {
          times_rows<kVk>(x, do_lane, Cfg::kLdO, own);
#pragma unroll
          for (int mt = 0; mt < kMt; ++mt) xch[64 * mt] = x[mt];
        }
        __syncthreads();
        // 2. Wave A: P and dS; dS into its slots for B and into LDS for dQ.
        u64 pb[kMt];
        if (wave_a) {
          Acc dp[kMt];
#pragma unroll
          for (int mt = 0; mt < kMt; ++mt) dp[mt] = xch[64 * mt];
          if (check)
            p_and_ds<true>(x, dp, slse, sdelta, b, hq, q0, key, g, true);
          else
            p_and_ds<false>(x, dp, slse, sdelta, b, hq, q0, key, g, false);
#pragma unroll
          for (int mt = 0; mt < kMt; ++mt) {
            pb[mt] = pack4<Cfg::kBf16>(x[mt][0], x[mt][1], x[mt][2], x[mt][3]);
            const u64 db = pack4<Cfg::kBf16>(dp[mt][0], dp[mt][1], dp[mt][2], dp[mt][3]);
            *reinterpret_cast<u64*>(xch + 64 * mt) = db;
#pragma unroll
            for (int v = 0; v < M::kC; ++v)
              sds[(N * mt + c_row<N>(v, g)) * Cfg::kLdS + keys * N + j] =
                  static_cast<u16>(db >> (16 * v));
          }
        }
        __syncthreads();  // dS of every pair is in LDS
        // 3. Wave A: dV^T += dO^T P; B: dK^T += Q^T dS.
        if (wave_a) {
          times_scores<kVk>(acc, dot_lane, pb);
        } else {
          u64 db[kMt];
#pragma unroll
          for (int mt = 0; mt < kMt; ++mt) db[mt] = *reinterpret_cast<const u64*>(xch + 64 * mt);
          times_scores<kQk>(acc, qt_lane, db);
        }
      } else {
        // 1. S = Q K^T and dP = dO V^T for the block's queries and this wave's keys.
        Acc s[kMt], dp[kMt];
#pragma unroll
        for (int mt = 0; mt < kMt; ++mt) s[mt] = dp[mt] = Acc{};
        times_rows<kQk>(s, q_lane, Cfg::kLdQ, kf);
        times_rows<kVk>(dp, do_lane, Cfg::kLdO, vf);

        // 2. P and dS; dS into LDS for dQ.
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
        times_scores<kVk>(dv, dot_lane, pb);
        times_scores<kQk>(dk, qt_lane, db);
        __syncthreads();  // dS of every wave is in LDS
      }

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

    // dK (times the softmax scale) and dV of the lane's key. (No early return: the gradient
    // sink's finish has a barrier.)
    if (key < kv_len) {
      u16* gdk = Layout::kv_row(p, static_cast<u16*>(p.dk), p.dk_stride, b, h_kv, key);
      u16* gdv = Layout::kv_row(p, static_cast<u16*>(p.dv), p.dv_stride, b, h_kv, key);
      if constexpr (kPaired) {
        if (wave_a)
          store_row<kVk>(gdv, acc, 1.f, g);
        else
          store_row<kQk>(gdk, acc, p.scale, g);
      } else {
        store_row<kQk>(gdk, dk, p.scale, g);
        store_row<kVk>(gdv, dv, 1.f, g);
      }
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
