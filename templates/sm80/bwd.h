// Backward attention on the mma.sync path (sm_80 and up), FlashAttention-2 style,
// KV-stationary: a CTA of 8 warps owns BLOCK_N keys of one (batch, kv head) and loops over
// the query heads of its GQA group and their blocks of 64 queries. Per query block:
//   1. S^T = K Q^T and dP^T = V dO^T: warps tile keys x queries, 32 keys each;
//      P is recomputed from the LSE and dS = P * (dP - delta) * d score_mod / d score
//      (Variant::grad, which also adds the gradients of captured tensors);
//      P^T and dS^T go to shared memory.
//   2. dV += P^T dO and dK += dS^T Q: each warp keeps the same 32 keys and owns a slice of
//      the head dim, so dK and dV stay in registers for the whole CTA.
//   3. dQ += dS K: warps tile 32 queries x a head-dim slice; fp32 reductions into dq_accum
//      (unscaled: the dq row pass, common/bwd_rows.h, applies the softmax scale); in the
//      deterministic mode (Cfg::kDeterministic) the CTAs take turns per dQ tile
//      (common/dq_order.h).
// Every MMA takes its operands from 32-row (two m16) tiles, so one ldmatrix feeds two or
// more MMAs (that cut shared-memory reads to FlashAttention-2's count). What bounds it now is
// latency: 2 warps per scheduler at ~7.4 cycles per issue (Nsight, bench/RESULTS.md).
// With STAGES = 2 the next block's Q, dO and row statistics (the log2 LSE and delta) are
// loaded (cp.async) under this block's math.
// Rows are addressed through Cfg::Layout (common/kv_layout.h), the (query head, query block)
// pairs come from the block walk (common/block_walk.h), the normalization is the Variant's
// policy (common/normalizers.h).
#pragma once

#include "common/block_walk.h"
#include "common/bwd_scores.h"
#include "common/dq_order.h"
#include "common/kv_layout.h"
#include "common/normalizers.h"
#include "common/params.h"
#include "common/tile_scheduler.h"
#include "sm80/shapes.h"
#include "sm80/tile_io.h"

#ifndef AE_BWD_QUERY_CHUNK
#define AE_BWD_QUERY_CHUNK 32  // see kQC
#endif

namespace ae::sm80 {

// 8 warps: 16 (128 registers each) measured slower (bench/RESULTS.md).
template <int D_QK_, int D_V_, int BLOCK_N_, int STAGES_, bool BF16_, class LAYOUT_,
          bool DETERMINISTIC_ = false>
struct BwdConfig {
  using Layout = LAYOUT_;
  static constexpr int kDqk = D_QK_, kDv = D_V_, kBlockN = BLOCK_N_, kWarps = kBwdWarps;
  static constexpr int kStages = STAGES_;
  static constexpr bool kBf16 = BF16_, kDeterministic = DETERMINISTIC_;
  static constexpr int kBlockM = kBwdBlockM, kThreads = 32 * kWarps;
  static constexpr int kWarpsQ = kWarps / 2;  // dQ: 2 warps on queries x kWarpsQ on dims
  static constexpr int kWarpsN = kBlockN / 32;      // warps along keys (32 keys each)
  static constexpr int kWarpsM = kWarps / kWarpsN;  // along queries (S^T) or head dim (dK, dV)
  static constexpr int kLdQK = kDqk + 8, kLdV = kDv + 8, kLdP = kBlockM + 8;
  static constexpr int kSmemK = kBlockN * kLdQK, kSmemV = kBlockN * kLdV;
  static constexpr int kSmemQ = kBlockM * kLdQK, kSmemDO = kBlockM * kLdV, kSmemP = kBlockN * kLdP;
  static constexpr int kSmemBytes = bwd_smem_bytes(kBlockN, kDqk, kDv, kStages);  // the planner's
  static_assert(kSmemBytes == 2 * (kSmemK + kSmemV + kStages * (kSmemQ + kSmemDO) + 2 * kSmemP) +
                                  kStages * 2 * 4 * kBlockM,
                "sm80/shapes.h");
  static_assert(kBlockN == 64 || kBlockN == 128, "64 or 128 keys per CTA");
  static_assert(kBlockM / kWarpsM >= 16, "S^T tiles of at least 16 queries per warp");
  static_assert(kDqk % 16 == 0 && kDv % 16 == 0, "head dims in multiples of 16");
};

template <class Cfg, class Variant>
struct BwdKernel {
  static constexpr int kQW = Cfg::kBlockM / Cfg::kWarpsM;  // queries per warp in S^T
  // Head-dim chunks of 16 per warp (chunk c of warp w is w + kWarpsM * c; the last may be
  // missing when the chunk count does not divide evenly).
  static constexpr int kCK = (Cfg::kDqk / 16 + Cfg::kWarpsM - 1) / Cfg::kWarpsM;
  static constexpr int kCV = (Cfg::kDv / 16 + Cfg::kWarpsM - 1) / Cfg::kWarpsM;
  // S^T and dP^T are computed for kQC queries at a time: all kQW, so each K and V fragment is
  // loaded once per block (at D128, 32 queries next to dK and dV fit in 255 registers at
  // ptxas level 0: +9% over 16, bench/RESULTS.md); 16 where Q's 16-byte chunks do not divide
  // the threads (D96), whose copy index math leaves no room (sigmoid spilled), and where the
  // spill fallback asks for it (-DAE_BWD_QUERY_CHUNK=16, KernelSpec::fallback_options).
  static constexpr int kQC =
      TileLoader<Cfg::kBlockM, Cfg::kDqk, Cfg::kThreads>::kFits && AE_BWD_QUERY_CHUNK >= kQW ? kQW : 16;
  static constexpr int kQ8 = kQC / 8;
  static constexpr int kCQ = (Cfg::kDqk / 16 + Cfg::kWarpsQ - 1) / Cfg::kWarpsQ;
  static constexpr bool kFullUnroll = Cfg::kDqk <= 128 && Cfg::kDv <= 128;
  using Norm = typename Variant::Norm;
  using Layout = typename Cfg::Layout;

  const AttnParams& p;
  const Variant& var;

  // Whether a warp's chunk exists: always when the chunks divide evenly among the warps,
  // which the compiler must see, or it branches around every fragment load and MMA.
  template <int NCHUNKS, int STRIDE>
  static AE_DEVICE bool has_chunk(int chunk) {
    return NCHUNKS % STRIDE == 0 || chunk < NCHUNKS;
  }

  // d += A (two m16 tiles) times a [k][n] tile B, over k in [0, K), for this warp's chunks of
  // n (first_chunk + STRIDE c): the shape of dV, dK and dQ. a_at: the lane's address of the
  // warp's first A row (lane_a; kTransA: A stored [k][m], lane_nk); b_at: of B's
  // first_chunk (lane_kn).
  template <int K, int LDA, int LDB, int NCH, int STRIDE, int NCHUNKS, bool kTransA>
  AE_DEVICE void mma_chunks(float (&d)[2][2 * NCH][4], u32 a_at, u32 b_at, int first_chunk) {
    // Fully unrolled up to head dim 128; two k steps per iteration cost 5-15% (ALiBi: 15%,
    // bench/RESULTS.md). Variants that read captured tensors fit at some register-usage
    // level (the spill fallback, KernelSpec::fallback_options, finds it).
#pragma unroll(kFullUnroll ? K / 16 : 2)
    for (int kk = 0; kk < K / 16; ++kk) {
      u32 a[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        if constexpr (kTransA) load_a_t<LDA>(a[mt], a_at, kk * 16, 16 * mt);
        else load_a<LDA>(a[mt], a_at, 16 * mt, kk * 16);
      }
#pragma unroll
      for (int c = 0; c < NCH; ++c) {
        if (!has_chunk<NCHUNKS, STRIDE>(first_chunk + STRIDE * c)) continue;
        u32 r[4];
        load_b_kn<LDB>(r, b_at, kk * 16, STRIDE * 16 * c);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          mma_16816<Cfg::kBf16>(d[mt][2 * c], a[mt], r[0], r[1]);
          mma_16816<Cfg::kBf16>(d[mt][2 * c + 1], a[mt], r[2], r[3]);
        }
      }
    }
  }

  // d = A B^T for A = 32 rows and B = kQC rows, both [row][k] with k in [0, K): S^T and
  // dP^T. a_at, b_at: the lane's addresses of their first rows (lane_a, lane_nk).
  template <int K, int LD>
  AE_DEVICE void mma_rows(float (&d)[2][kQ8][4], u32 a_at, u32 b_at) {
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int i = 0; i < kQ8; ++i) d[mt][i][0] = d[mt][i][1] = d[mt][i][2] = d[mt][i][3] = 0.f;
    // Unrolled 4 k steps at a time past D 128: full unrolling hoists more fragment loads than
    // the registers hold next to dK and dV (it spilled at D 192).
#pragma unroll(K > 128 ? 4 : K / 16)
    for (int kk = 0; kk < K / 16; ++kk) {
      u32 a[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) load_a<LD>(a[mt], a_at, 16 * mt, kk * 16);
#pragma unroll
      for (int np = 0; np < kQ8 / 2; ++np) {
        u32 r[4];
        load_b_nk<LD>(r, b_at, np * 16, kk * 16);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          mma_16816<Cfg::kBf16>(d[mt][2 * np], a[mt], r[0], r[1]);
          mma_16816<Cfg::kBf16>(d[mt][2 * np + 1], a[mt], r[2], r[3]);
        }
      }
    }
  }

  // S^T becomes P^T and dP^T becomes dS^T, element by element (common/bwd_scores.h), for
  // this warp's keys from key0 and queries from q0 + qc.
  template <bool kCheck>
  AE_DEVICE void p_and_ds(float (&st)[2][kQ8][4], float (&dpt)[2][kQ8][4], const float* sLse,
                          const float* sDelta, int b, int hq, int key0, int q0, int qc,
                          bool check) {
    const int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
      for (int nt = 0; nt < kQ8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int ql = qc + nt * 8 + 2 * t + (e & 1);
          score_backward<kCheck, Layout>(p, var, st[mt][nt][e], dpt[mt][nt][e], sLse[ql],
                                         sDelta[ql], b, hq, q0 + ql,
                                         key0 + 16 * mt + g + 8 * (e >> 1), check);
        }
      }
    }
  }

  AE_DEVICE void run(char* smem_raw) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const WorkTile tile = Cfg::kDeterministic ? ReversedBlocks::tile(p) : GridOrder::tile(p);
    const int n_block = tile.block, h_kv = tile.head, b = tile.batch;
    const int k0 = n_block * Cfg::kBlockN;
    if constexpr (Layout::kVarlen)  // past its sequence's keys (never deterministic: no turns)
      if (k0 >= Layout::kv_len(p, b)) return;
    const int kw0 = (warp % Cfg::kWarpsN) * 32;  // this warp's keys (S^T, dK, dV)
    const int wm = warp / Cfg::kWarpsN;          // its query slice (S^T) and dim slice (dK, dV)
    const int qw0 = wm * kQW;
    u16* sK = reinterpret_cast<u16*>(smem_raw);
    u16* sV = sK + Cfg::kSmemK;
    u16* sQ0 = sV + Cfg::kSmemV;
    u16* sdO0 = sQ0 + Cfg::kStages * Cfg::kSmemQ;
    u16* sPt = sdO0 + Cfg::kStages * Cfg::kSmemDO;  // P^T  [key][query]
    u16* sdSt = sPt + Cfg::kSmemP;                   // dS^T [key][query]
    float* sLse0 = reinterpret_cast<float*>(sdSt + Cfg::kSmemP);  // [stage][query]
    float* sDelta0 = sLse0 + Cfg::kStages * Cfg::kBlockM;
    // Each lane's fragment addresses, once (tile_io.h): stage 0's for Q and dO, whose other
    // stage is kStageQ / kStageDO bytes further.
    constexpr u32 kStageQ = 2 * Cfg::kSmemQ, kStageDO = 2 * Cfg::kSmemDO;
    constexpr u32 kDsOff = 2 * Cfg::kSmemP;  // dS^T past P^T
    constexpr int kLdQK = Cfg::kLdQK, kLdV = Cfg::kLdV, kLdP = Cfg::kLdP;
    const u32 k_rows = lane_a<kLdQK>(smem_addr(sK)) + 2 * kw0 * kLdQK;      // S^T's A
    const u32 v_rows = lane_a<kLdV>(smem_addr(sV)) + 2 * kw0 * kLdV;        // dP^T's A
    const u32 q_rows = lane_nk<kLdQK>(smem_addr(sQ0)) + 2 * qw0 * kLdQK;    // S^T's B
    const u32 do_rows = lane_nk<kLdV>(smem_addr(sdO0)) + 2 * qw0 * kLdV;    // dP^T's B
    const u32 pt_rows = lane_a<kLdP>(smem_addr(sPt)) + 2 * kw0 * kLdP;      // dV's A (dK's: + kDsOff)
    const u32 do_cols = lane_kn<kLdV>(smem_addr(sdO0)) + 2 * 16 * wm;       // dV's B
    const u32 q_cols = lane_kn<kLdQK>(smem_addr(sQ0)) + 2 * 16 * wm;        // dK's B
    // P^T and dS^T stores: this thread's row kw0 + g and column pair qw0 + 2 t of P^T
    const u32 pt_store = smem_addr(sPt) + 2 * ((kw0 + g) * kLdP + qw0 + 2 * t);

    load_tile<Cfg::kBlockN, Cfg::kDqk, Cfg::kThreads>(
        sK, Layout::kv_row(p, static_cast<const u16*>(p.k), p.k_stride, b, h_kv, k0), p.k_stride[2],
        Layout::kv_len(p, b) - k0);
    load_tile<Cfg::kBlockN, Cfg::kDv, Cfg::kThreads>(
        sV, Layout::kv_row(p, static_cast<const u16*>(p.v), p.v_stride, b, h_kv, k0), p.v_stride[2],
        Layout::kv_len(p, b) - k0);

    // The (query head, query block) pairs this CTA visits, in order, with their block codes
    // (full without a mask); blocks the mask leaves empty are skipped.
    using Walk = ColumnWalkOf<Layout::kVarlen && !Variant::kHasMask>;  // (as sm90/bwd.h's)
    using QBlock = typename Walk::Item;
    Walk walk(p, b, h_kv, n_block, Variant::kHasMask, q_blocks_of<Layout, Cfg::kBlockM>(p, b));
    // Q and dO of one block, once per block: TileLoader's precomputed offsets save most of the
    // copy's index math.
    auto load_q_do = [&](QBlock it, int stage) {
      const int hq = h_kv * p.group + it.hq_off, q0 = it.mb * Cfg::kBlockM;
      TileLoader<Cfg::kBlockM, Cfg::kDqk, Cfg::kThreads>().load(
          sQ0 + stage * Cfg::kSmemQ, Layout::q_row(p, static_cast<const u16*>(p.q), p.q_stride, b, hq, q0),
          p.q_stride[2], Layout::q_len(p, b) - q0);
      TileLoader<Cfg::kBlockM, Cfg::kDv, Cfg::kThreads>().load(
          sdO0 + stage * Cfg::kSmemDO,
          Layout::q_row(p, static_cast<const u16*>(p.dout), p.do_stride, b, hq, q0), p.do_stride[2],
          Layout::q_len(p, b) - q0);
      if constexpr (Norm::kRowStats || Norm::kLinearRows) {  // the row statistics: 4 bytes each
        const int i = threadIdx.x % Cfg::kBlockM, row = q0 + i;
        const long long off = Layout::stat(p, b, hq, row);
        const bool ok = row < Layout::q_len(p, b);  // rows past the end read as 0 (and are masked)
        if (threadIdx.x < Cfg::kBlockM)
          cp_async_4(sLse0 + stage * Cfg::kBlockM + i, ok ? p.lse2 + off : p.lse2, ok);
        else if (threadIdx.x < 2 * Cfg::kBlockM)
          cp_async_4(sDelta0 + stage * Cfg::kBlockM + i, ok ? p.delta + off : p.delta, ok);
      }
    };

    QBlock it = walk.pop(p, b, h_kv, n_block), itn = walk.pop(p, b, h_kv, n_block);
    if (it.hq_off < p.group) load_q_do(it, 0);
    cp_async_commit();  // K, V and the first Q, dO

    float dk[2][2 * kCK][4], dv[2][2 * kCV][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
      for (int i = 0; i < 2 * kCK; ++i) dk[mt][i][0] = dk[mt][i][1] = dk[mt][i][2] = dk[mt][i][3] = 0.f;
#pragma unroll
      for (int i = 0; i < 2 * kCV; ++i) dv[mt][i][0] = dv[mt][i][1] = dv[mt][i][2] = dv[mt][i][3] = 0.f;
    }

    for (int stage = 0; it.hq_off < p.group; stage = Cfg::kStages == 2 ? stage ^ 1 : 0) {
      const int hq = h_kv * p.group + it.hq_off, q0 = it.mb * Cfg::kBlockM;
      const long long dq_row0 =  // this head's first row in dq_accum
          (static_cast<long long>(b) * p.q_heads + hq) * p.n_q_blocks * Cfg::kBlockM;
      const bool more = itn.hq_off < p.group;
      const u32 stage_q = stage * kStageQ, stage_do = stage * kStageDO;
      const float* sLse = sLse0 + stage * Cfg::kBlockM;
      const float* sDelta = sDelta0 + stage * Cfg::kBlockM;
      // One barrier at the top of a block: this block's Q, dO and statistics have landed, and
      // every warp is done with the last block, so its P^T, dS^T and (with 2 stages) the other
      // stage's Q, dO are free; the next block's loads go there now, under this block's math.
      cp_async_wait<0>();
      __syncthreads();
      if constexpr (Cfg::kStages == 2) {
        if (more) load_q_do(itn, stage ^ 1);
        cp_async_commit();
      }

      // 1. S^T and dP^T for this warp's 32 keys x kQW queries (kQC at a time); P and dS
      //    element by element.
      const bool check = q0 + Cfg::kBlockM > Layout::q_len(p, b) || k0 + Cfg::kBlockN > Layout::kv_len(p, b) ||
                         it.code == kBlockPartial;
#pragma unroll 1
      for (int qc = qw0; qc < qw0 + kQW; qc += kQC) {
        float st[2][kQ8][4], dpt[2][kQ8][4];
        mma_rows<Cfg::kDqk, kLdQK>(st, k_rows, q_rows + stage_q + 2 * (qc - qw0) * kLdQK);
        mma_rows<Cfg::kDv, kLdV>(dpt, v_rows, do_rows + stage_do + 2 * (qc - qw0) * kLdV);
        // A check-free copy of the element loop for blocks that need no check: the mask and
        // the bounds cost a few instructions per score (plain softmax: one FFMA and one MUFU).
        if (!check)
          p_and_ds<false>(st, dpt, sLse, sDelta, b, hq, k0 + kw0, q0, qc, false);
        else
          p_and_ds<true>(st, dpt, sLse, sDelta, b, hq, k0 + kw0, q0, qc, check);
        // P^T and dS^T to shared memory: pairs of adjacent queries, one 32-bit store per row.
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int nt = 0; nt < kQ8; ++nt)
#pragma unroll
            for (int r = 0; r < 2; ++r) {
              const u32 at = pt_store + 2 * ((16 * mt + 8 * r) * kLdP + qc - qw0 + nt * 8);
              st_shared_u32(at, pack2<Cfg::kBf16>(st[mt][nt][2 * r], st[mt][nt][2 * r + 1]));
              st_shared_u32(at + kDsOff, pack2<Cfg::kBf16>(dpt[mt][nt][2 * r], dpt[mt][nt][2 * r + 1]));
            }
      }
      __syncthreads();

      // 2. dV += P^T dO and dK += dS^T Q on this warp's keys and head-dim chunks.
      mma_chunks<Cfg::kBlockM, kLdP, kLdV, kCV, Cfg::kWarpsM, Cfg::kDv / 16, false>(
          dv, pt_rows, do_cols + stage_do, wm);
      mma_chunks<Cfg::kBlockM, kLdP, kLdQK, kCK, Cfg::kWarpsM, Cfg::kDqk / 16, false>(
          dk, pt_rows + kDsOff, q_cols + stage_q, wm);

      // 3. dQ += dS K for 32 queries x this warp's chunks, into the fp32 buffer.
      {
        const int qd0 = (warp % 2) * 32, wq = warp / 2;
        float dq[2][2 * kCQ][4];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int i = 0; i < 2 * kCQ; ++i) dq[mt][i][0] = dq[mt][i][1] = dq[mt][i][2] = dq[mt][i][3] = 0.f;
        mma_chunks<Cfg::kBlockN, kLdP, kLdQK, kCQ, Cfg::kWarpsQ, Cfg::kDqk / 16, true>(
            dq, lane_nk<kLdP>(smem_addr(sdSt)) + 2 * qd0,
            lane_kn<kLdQK>(smem_addr(sK)) + 2 * 16 * wq, wq);
        // This thread's rows are qd0 + g + 16 mt + 8 r, its columns from 16 wq + 2 t: one
        // 64-bit base and immediates past it. dq_accum's rows are padded to whole query blocks,
        // so rows past the end need no test (they land in the padding).
        float* dq_base = p.dq_accum + (dq_row0 + q0 + qd0 + g) * Cfg::kDqk + 16 * wq + 2 * t;
        if constexpr (Cfg::kDeterministic) {  // this CTA's turn at the tile
          if (warp == 0) {
            const int turn = dq_rank(p, b, hq, it.mb, n_block, walk.states);
            if (lane == 0) dq_order_wait(dq_order_at(p, b, hq, it.mb), turn);
          }
          __syncthreads();
        }
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
          for (int r = 0; r < 2; ++r) {
#pragma unroll
            for (int i = 0; i < 2 * kCQ; ++i) {
              const int chunk = wq + Cfg::kWarpsQ * (i / 2);
              if (!has_chunk<Cfg::kDqk / 16, Cfg::kWarpsQ>(chunk)) continue;
              // chunk - wq times 16 columns, + 8 for the odd n8 tile
              red_add2(dq_base + (16 * mt + 8 * r) * Cfg::kDqk + Cfg::kWarpsQ * 16 * (i / 2) + 8 * (i % 2),
                       dq[mt][i][2 * r], dq[mt][i][2 * r + 1]);
            }
          }
        }
        if constexpr (Cfg::kDeterministic) {  // the next CTA's turn once every addition is done
          __threadfence();
          __syncthreads();
          if (threadIdx.x == 0) dq_order_arrive(dq_order_at(p, b, hq, it.mb));
        }
      }
      if constexpr (Cfg::kStages == 1) {
        __syncthreads();  // sQ, sdO are refilled now, P^T and dS^T next
        if (more) load_q_do(itn, 0);
        cp_async_commit();
      }
      it = itn;
      itn = walk.pop(p, b, h_kv, n_block);
    }
    cp_async_wait<0>();

    // dK (times the softmax scale) and dV for this warp's keys and chunks.
    u16* gdk = Layout::kv_row(p, static_cast<u16*>(p.dk), p.dk_stride, b, h_kv, 0);
    u16* gdv = Layout::kv_row(p, static_cast<u16*>(p.dv), p.dv_stride, b, h_kv, 0);
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int key = k0 + kw0 + 16 * mt + g + 8 * r;
        if (key >= Layout::kv_len(p, b)) continue;
#pragma unroll
        for (int i = 0; i < 2 * kCK; ++i) {
          const int chunk = wm + Cfg::kWarpsM * (i / 2);
          if (!has_chunk<Cfg::kDqk / 16, Cfg::kWarpsM>(chunk)) continue;
          *reinterpret_cast<u32*>(gdk + key * p.dk_stride[2] + chunk * 16 + 8 * (i % 2) + 2 * t) =
              pack2<Cfg::kBf16>(dk[mt][i][2 * r] * p.scale, dk[mt][i][2 * r + 1] * p.scale);
        }
#pragma unroll
        for (int i = 0; i < 2 * kCV; ++i) {
          const int chunk = wm + Cfg::kWarpsM * (i / 2);
          if (!has_chunk<Cfg::kDv / 16, Cfg::kWarpsM>(chunk)) continue;
          *reinterpret_cast<u32*>(gdv + key * p.dv_stride[2] + chunk * 16 + 8 * (i % 2) + 2 * t) =
              pack2<Cfg::kBf16>(dv[mt][i][2 * r], dv[mt][i][2 * r + 1]);
        }
      }
    }
  }
};

template <class Cfg, class Variant>
AE_DEVICE void attention_bwd(const AttnParams& p, const Variant& var) {
  extern __shared__ __align__(16) char smem[];
  // Captured tensors' gradients (common/variant_support.h): a shared copy, if any, sits past
  // the kernel's own shared memory; the first barrier of the block loop orders its zeroing
  // before the first addition.
  var.grads.start(smem + Cfg::kSmemBytes, var.va, threadIdx.x, Cfg::kThreads);
  BwdKernel<Cfg, Variant> k{p, var};
  k.run(smem);
  var.grads.finish(var.va, threadIdx.x, Cfg::kThreads, [] { __syncthreads(); });
}

}  // namespace ae::sm80
