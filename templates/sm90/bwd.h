// Backward attention for Hopper (sm_90a): TMA, wgmma and warp specialization, KV-stationary.
//
// One CTA owns BLOCK_N = 64 * kMma keys of one (batch, KV head) and loops over the (query
// head, query block) pairs of the block walk (common/block_walk.h), 64 queries each. It runs
// 1 + kMma warpgroups:
//   producer (warpgroup 0, registers given away): its first warp loads K and V once (TMA),
//            then per query block Q and dO (TMA) and the rows' log2 LSE and delta (plain
//            loads, stored by the warp) into a ring of kStages stages, each completing on its
//            full barrier; its second warp, the dQ writer, adds each 64 x 64 dQ tile the
//            MMA warpgroups fill into dq_accum with one bulk reduction (and, deterministic,
//            waits its turn);
//   MMA      (warpgroups 1.., 64 keys each; a warp has 16 keys):
//            S^T = K Q^T and dP^T = V dO^T by wgmma from shared memory (keys are the M
//            dimension, so the accumulators hold P^T and dS^T in the C layout, a key per row);
//            P and dS per score (common/bwd_scores.h); dV += P^T dO and dK += dS^T Q with
//            P^T and dS^T as register A operands (dK and dV stay in registers across the
//            loop); dS^T stored to shared memory, and dQ = dS K by wgmma with both operands
//            transposed (dS M-major, K N-major); the warpgroups' dQ goes to 64 x 64 fp32
//            tiles in shared memory for the writer (tiled in dq_accum, BwdRowParams::
//            acc_tiled), so the MMA warps issue no global atomics and never wait for global
//            memory.
// dQ is split between the warpgroups by columns, over all keys, after a barrier that says
// every dS^T of the block is stored: a 64-column block each at head dim 128, else half of
// each 64-column chunk (BwdConfig::kDqHalves), so that each dQ tile is added once per CTA.
// Past 256 columns of dK + dV (Cfg::kScoreParts), S^T and dP^T are computed for 32 queries at
// a time and dV's and dK's GEMMs finish before dQ's starts, so that everything fits 240
// registers (up to 192 + 128).
// Wide (Cfg::kWide, past 320 columns: 256 + 256, 256 + 128, 128 + 256) a CTA owns 64 keys and
// the MMA warpgroups share them: each computes S^T and dP^T for 32 of the block's queries,
// stores P^T and dS^T to shared memory, and after a barrier takes half of dV's and dK's columns
// over all 64 queries (both operands from shared memory) and its share of dQ's. dO has one
// stage (shared memory), freed as soon as dV's GEMM is done.
// Deterministic (Cfg::kDeterministic): the CTAs add into each dQ tile in a fixed order
// (common/dq_order.h).
#pragma once

#include "common/block_walk.h"
#include "common/bwd_scores.h"
#include "common/dq_order.h"
#include "common/params.h"
#include "common/tile_scheduler.h"
#include "nvidia/mma.h"
#include "nvidia/mma_rows.h"
#include "sm90/gemm.h"
#include "sm90/hopper_ops.h"
#include "sm90/shapes.h"
#include "sm90/wgmma.h"

namespace ae::sm90 {

template <int D_QK_, int D_V_, bool BF16_, class LAYOUT_, bool DETERMINISTIC_ = false,
          bool PADDED_ = false>
struct BwdConfig {
  using Layout = LAYOUT_;
  static constexpr int kDqk = D_QK_, kDv = D_V_, kMma = kBwdMma, kStages = kBwdStages;
  static constexpr bool kBf16 = BF16_, kDeterministic = DETERMINISTIC_;
  // The tensors' head dims below kDqk / kDv (csrc/plan/tile_tables.h sm90_padded): only their
  // columns of dK and dV are stored (AttnParams d_qk / d_v). (Tested always, the tests spilled
  // a register-tight D128 kernel.)
  static constexpr bool kPadded = PADDED_;
  static constexpr bool kWide = bwd_wide(kDqk, kDv);  // the warpgroups share their keys
  static constexpr int kBlockM = kBwdBlockM, kBlockN = bwd_block_n(kDqk, kDv);
  static constexpr int kThreads = 32 * kBwdWarps, kDoStages = kWide ? 1 : kStages;
  // The columns of dK and dV a warpgroup holds (wide: its half).
  static constexpr int kDkCols = kWide ? kDqk / kMma : kDqk, kDvCols = kWide ? kDv / kMma : kDv;
  // Tiles as TMA writes them with 128-byte swizzle: [D / 64 column blocks][rows][64]; dS^T
  // (and, wide, P^T) [key][64 queries] with the same swizzle.
  static constexpr int kKBytes = kBlockN * kDqk * 2, kVBytes = kBlockN * kDv * 2;
  static constexpr int kQBytes = kBlockM * kDqk * 2, kDoBytes = kBlockM * kDv * 2;
  static constexpr int kDsBytes = kBlockN * kBlockM * 2, kPtBytes = kWide ? kDsBytes : 0;
  // A dQ tile; one per MMA warpgroup in shared memory.
  static constexpr int kDqTileBytes = 64 * 64 * 4;
  static constexpr int kSmemBytes = bwd_smem_bytes(kDqk, kDv);  // the planner's
  static_assert(kSmemBytes == 1024 + kKBytes + kVBytes + kDoStages * kDoBytes +
                                  kStages * (kQBytes + kDsBytes + kPtBytes + 8 * kBlockM) +
                                  kMma * kDqTileBytes + 8 * (2 + 2 * kStages + (kWide ? 2 : 0)),
                "sm90/shapes.h");
  // dQ = dS K over all the CTA's keys, split between the warpgroups by columns: at head dim
  // 128 each takes one 64-column block into its own tile; at 64, 192 and 256 the columns go in
  // chunks of 64, each warpgroup taking half of one (wgmma N = 32) into a tile they share
  // (kDqHalves; at 192 the chunks alternate between two tiles, kDqAlternate below). Either way
  // the writer adds each 64 x 64 tile once per CTA (kDqAdds). (Split by keys, each warpgroup
  // adding its own tile, the additions doubled: 0.77x the fwd+bwd at head dim 128;
  // bench/RESULTS.md, fourteenth session.)
  static constexpr bool kDqHalves = kDqk != 64 * kMma;
  static constexpr int kDqN = kDqHalves ? 32 : 64, kDqChunks = kDqHalves ? kDqk / 64 : 1;
  static constexpr int kDqAdds = kDqk / 64;
  // Several chunks per block (head dim 192): the chunks alternate between the two tiles, the
  // writer's last addition reading one while the warpgroups write the other. At head dim 64,
  // alternating across query blocks cost 3.6% fwd+bwd causal (bench/RESULTS.md, fifteenth
  // session): one tile there.
  static constexpr bool kDqAlternate = kDqHalves && kDqChunks > 1;
  // The first column of warpgroup cw's share of chunk c, and the tile of the n-th chunk of the
  // CTA (counted across its query blocks).
  AE_DEVICE static int dq_col(int c, int cw) { return kDqHalves ? 64 * c + 32 * cw : 64 * cw; }
  AE_DEVICE static int dq_tile(int n, int cw) {
    return !kDqHalves ? cw : kDqAlternate ? n & 1 : 0;
  }
  // S^T and dP^T in two ranges of 32 queries where dK and dV hold more than 128 registers.
  // (Wide, each warpgroup computes 32 queries: one part.)
  static constexpr int kScoreParts = !kWide && kDqk + kDv > 256 ? 2 : 1;
  // dQ's GEMM before dK's (its tile stored while dK's runs) at head dim 128 (+1.5-2% fwd+bwd);
  // at head dim 64 the other order was 1-2.5% faster with dQ split by keys (bench/RESULTS.md,
  // 2026-12-02 "GEMM order") and the same with dQ by columns (0.996 / 0.995, fifteenth
  // session).
  static constexpr bool kDqBeforeDk = !kDqHalves && kScoreParts == 1 && !kWide;
  // (Wide, the producer's dO ring spilled a register at 24 (a causal mask); its MMA warpgroups
  // hold 176 accumulator registers and have room to give.)
  static constexpr int kProducerRegs = kWide ? 40 : 24, kMmaRegs = kWide ? 232 : 240;
  // dK and dV stay in registers: Dqk + Dv columns of 64 keys, 160 of the 240 at 192 + 128
  // (wide: half of them, 128 at 256 + 256).
  static_assert(kWide ? (kDqk == 128 || kDqk == 256) && (kDv == 128 || kDv == 256)
                      : kDqk % 64 == 0 && kDv % 64 == 0 && kDqk <= 192 && kDv <= 192,
                "head dims multiples of 64, Dqk + Dv at most 320, or wide 128 / 256 each");
  static_assert(kBlockM == 64 && kBlockN == (kWide ? 64 : 64 * kMma) &&
                    kThreads == 128 * (kMma + 1), "shapes");
  // setmaxnreg moves registers within what the CTA was launched with (65536 / kThreads per
  // thread, rounded down to a multiple of 8); an increase that the decrease does not free
  // waits forever.
  static constexpr int kLaunchRegs = (65536 / kThreads) & ~7;
  static_assert((kMmaRegs - kLaunchRegs) * kMma <= kLaunchRegs - kProducerRegs, "registers");
  static_assert(kMma == 2, "named barriers 1-7 are laid out for two MMA warpgroups");
};

// P^T and dS^T of one warp's 16 keys (from key0) x kQ8 * 8 queries (from q0), in the C layout.
// kSplitMask: the mask's loads by key and by query where the tile has the registers for them.
template <bool kCheck, bool kSplitMask, class Layout, class Variant, int kQ8>
AE_DEVICE void scores_backward(const AttnParams& p, const Variant& var, float (&st)[kQ8][4],
                               float (&dpt)[kQ8][4], const float* lse, const float* delta, int b,
                               int hq, int q0, int key0, bool check) {
  const int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
  // The mask's loads by key (the thread's 2) and by query (2 per n8 tile), not 2 per score
  // (codegen/mask_split.h); checked tiles only.
  constexpr bool kSplit = kCheck && kSplitMask && Variant::kMaskSplit;
  typename Variant::MaskCol mcol[2];
  if constexpr (kSplit)
    if (check) {
      mcol[0] = var.mask_col(b, hq, key0 + g);
      mcol[1] = var.mask_col(b, hq, key0 + g + 8);
    }
#pragma unroll
  for (int nt = 0; nt < kQ8; ++nt) {
    typename Variant::MaskRow mrow[2];
    if constexpr (kSplit)
      if (check) {
        mrow[0] = var.mask_row(b, hq, q0 + nt * 8 + 2 * t);
        mrow[1] = var.mask_row(b, hq, q0 + nt * 8 + 2 * t + 1);
      }
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int ql = nt * 8 + 2 * t + (e & 1);
      score_backward<kCheck, Layout, Variant, kSplit>(p, var, st[nt][e], dpt[nt][e], lse[ql],
                                                      delta[ql], b, hq, q0 + ql,
                                                      key0 + g + 8 * (e >> 1), check,
                                                      mrow[e & 1], mcol[e >> 1]);
    }
  }
}

// dK += dS^T Q for this warpgroup's keys: dS^T from registers, Q (queries are K) N-major.
template <class Cfg>
AE_DEVICE void wgmma_dk(float (&dk)[Cfg::kDqk / 8][4], const u32 (&dsa)[Cfg::kBlockM / 16][4],
                        const char* tQ) {
  const u64 desc_q = smem_desc(tQ, Cfg::kBlockM * 128);
#pragma unroll
  for (int kk = 0; kk < Cfg::kBlockM / 16; ++kk)
    wgmma_rs<Cfg::kDqk, Cfg::kBf16>(dk, dsa[kk], desc_plus(desc_q, kk * 16 * 128), 1);
}

// Wide (Cfg::kWide): one query block's S^T and dP^T for the CTA's 64 keys x this warpgroup's 32
// queries, P^T and dS^T to shared memory ([key][query], swizzled as TMA would), and once both
// warpgroups stored theirs, dV += P^T dO and dK += dS^T Q for this warpgroup's half of the
// columns over all 64 queries (P^T and dS^T K-major, dO and Q N-major, all from shared memory).
// Returns with dK's GEMM in flight and dO's stage released (dV's GEMM done).
template <class Cfg, class Layout, class Variant>
AE_DEVICE void wide_block(const AttnParams& p, const Variant& var,
                          float (&dk)[Cfg::kDkCols / 8][4], float (&dv)[Cfg::kDvCols / 8][4],
                          const char* tQ, const char* tdO, char* tdS, char* tPt, const char* sK,
                          const char* sV, const float* lse, const float* delta, u64* do_full,
                          u64* do_empty, int it, int b, int hq, int q0, int key0, int key_w,
                          int cw, bool check) {
  constexpr int BM = Cfg::kBlockM, BN = Cfg::kBlockN, PQ = BM / Cfg::kMma;
  const int qp = PQ * cw, lane = threadIdx.x % 32;
  float st[PQ / 8][4], dpt[PQ / 8][4];
  wgmma_fence();
  gemm_ss_kmajor<PQ, Cfg::kDqk, Cfg::kBf16, true>(st, sK, BN * 128, tQ + qp * 128, BM * 128);
  wgmma_commit();
  mbar_wait(do_full, it & 1);
  wgmma_fence();  // (else ptxas injects one: the wait's loop sits between the GEMMs)
  gemm_ss_kmajor<PQ, Cfg::kDv, Cfg::kBf16, true>(dpt, sV, BN * 128, tdO + qp * 128, BM * 128);
  wgmma_commit();
  wgmma_wait<0>();
  fence_regs(st);
  fence_regs(dpt);
  if (check)
    scores_backward<true, true, Layout>(p, var, st, dpt, lse + qp, delta + qp, b, hq, q0 + qp,
                                        key0, true);
  else
    scores_backward<false, true, Layout>(p, var, st, dpt, lse + qp, delta + qp, b, hq, q0 + qp,
                                         key0, false);
  u32 pa[PQ / 16][4], dsa[PQ / 16][4];
  rows::p_to_a<Cfg::kBf16>(pa, st);
  rows::p_to_a<Cfg::kBf16>(dsa, dpt);
  // 16 keys x 16 queries per stmatrix (as the narrow path's dS^T): matrix m of lane l's address
  // is keys 8 (m % 2) .. + 7, queries 8 (m / 2) .. + 7 of the pair.
  const int m = lane / 8, i = lane % 8;
  const u32 row = (key_w + i + 8 * (m % 2)) * 128;  // row % 8 == i
#pragma unroll
  for (int kk = 0; kk < PQ / 16; ++kk) {
    const u32 at = row + ((((qp + 16 * kk) / 8 + m / 2) ^ i) << 4);
    stmatrix_x4(smem_u32(tPt) + at, pa[kk]);
    stmatrix_x4(smem_u32(tdS) + at, dsa[kk]);
  }
  // Both warpgroups' P^T and dS^T visible to wgmma after the fence and the barrier.
  fence_view_async_shared();
  named_bar_sync<1>(128 * Cfg::kMma);
  wgmma_fence();
  const u64 desc_pt = uniform_desc(smem_desc(tPt, 0)), desc_ds = uniform_desc(smem_desc(tdS, 0));
  const u64 desc_do =
      uniform_desc(smem_desc(tdO + cw * (Cfg::kDvCols / 64) * BM * 128, BM * 128));
  const u64 desc_q = uniform_desc(smem_desc(tQ + cw * (Cfg::kDkCols / 64) * BM * 128, BM * 128));
#pragma unroll
  for (int kk = 0; kk < BM / 16; ++kk)  // 16 queries: 32 bytes along P^T's rows, 16 rows of dO
    wgmma_ss_kn<Cfg::kDvCols, Cfg::kBf16>(dv, desc_plus(desc_pt, kk * 32),
                                          desc_plus(desc_do, kk * 16 * 128), 1);
  wgmma_commit();
#pragma unroll
  for (int kk = 0; kk < BM / 16; ++kk)
    wgmma_ss_kn<Cfg::kDkCols, Cfg::kBf16>(dk, desc_plus(desc_ds, kk * 32),
                                          desc_plus(desc_q, kk * 16 * 128), 1);
  wgmma_commit();
  wgmma_wait<1>();  // dV's: dO is free
  mbar_arrive(do_empty);
}

// Named barriers between each MMA warpgroup and the dQ writer (128 + 32 threads): its tile is
// free to write (empty), its tile is written (full). 1 is the MMA warpgroups' (dS^T stored, and
// wide P^T; 2 is unused), kGradsBar theirs at the end (captured tensors' gradients).
constexpr int kDqEmptyBar = 3, kDqFullBar = 3 + kBwdMma, kGradsBar = 3 + 2 * kBwdMma;

// The dQ writer (one warp of the producer warpgroup): per (query head, query block) of the
// walk and per chunk, the 64 x 64 fp32 tiles the MMA warpgroups filled (Cfg::dq_tile) into
// dq_accum (unscaled; whole tiles, padding rows included), one bulk reduction each, once every
// warpgroup with columns in the tile has handed it over. Deterministic: first the CTA's turn at
// the tile (common/dq_order.h; MMA warpgroup 0 counts it into *turn, a CTA's turn being
// kDqAdds additions), then its tiles in order, each complete before the next addition and
// counted. Its registers are the producer's few: the walk, and the rest in lane 0.
template <class Cfg, class Walk>
AE_DEVICE void dq_writer(const AttnParams& p, const float* sDq, const volatile int* turn, int b,
                         int h_kv, int n_block, bool masked) {
  const bool lane0 = threadIdx.x % 32 == 0;
  Walk walk(p, b, h_kv, n_block, masked, q_blocks_of<typename Cfg::Layout, Cfg::kBlockM>(p, b));
  int n = 0;  // the CTA's chunks so far
  for (auto item = walk.pop(p, b, h_kv, n_block); item.hq_off < p.group;
       item = walk.pop(p, b, h_kv, n_block)) {
#pragma unroll 1
    for (int c = 0; c < Cfg::kDqChunks; ++c, ++n) {
      // The tiles the warpgroups write next are read: free them. (Alternating, the last
      // chunk's addition, from the other tile, may still be reading.)
      if (lane0) bulk_wait_read<Cfg::kDqAlternate ? 1 : 0>();
      __syncwarp();
#pragma unroll
      for (int cw = 0; cw < Cfg::kMma; ++cw) named_bar_arrive_at(kDqEmptyBar + cw, 128 + 32);
#pragma unroll
      for (int cw = 0; cw < Cfg::kMma; ++cw) {
        named_bar_sync_at(kDqFullBar + cw, 128 + 32);
        if (!lane0) continue;
        const int hq = h_kv * p.group + item.hq_off;
        [[maybe_unused]] int* order = nullptr;
        if constexpr (Cfg::kDeterministic) {
          order = dq_order_at(p, b, hq, item.mb);
          if (cw == 0 && c == 0) {  // the CTA's turn; its later tiles follow its completed adds
            dq_order_wait(order, *turn);
            fence_proxy_async_global();  // the earlier additions before this one (async proxy)
          }
        }
        const int n0 = Cfg::dq_col(c, cw);
        if ((n0 + Cfg::kDqN) % 64 != 0) continue;  // the tile's other half comes next
        bulk_reduce_add_f32(p.dq_accum + ((static_cast<long long>(b) * p.q_heads + hq) *
                                              p.n_q_blocks + item.mb) * Cfg::kBlockM * Cfg::kDqk +
                                (n0 / 64) * 64 * 64,
                            sDq + Cfg::dq_tile(n, cw) * 64 * 64, Cfg::kDqTileBytes);
        bulk_commit();
        if constexpr (Cfg::kDeterministic) {
          bulk_wait();  // complete, not only read
          fence_proxy_async_global();
          dq_order_arrive(order);
        }
      }
    }
  }
  if (lane0) bulk_wait();  // shared memory stays until the last reductions are done
}

template <class Cfg, class Variant>
AE_DEVICE void attention_bwd(const AttnParams& p, const Variant& var, const TmaDesc* tq,
                             const TmaDesc* tk, const TmaDesc* tv, const TmaDesc* tdo) {
  constexpr int BM = Cfg::kBlockM, BN = Cfg::kBlockN, S = Cfg::kStages;
  using Norm = typename Variant::Norm;
  using Layout = typename Cfg::Layout;
  extern __shared__ __align__(1024) char smem_raw[];
  char* sK = align_1024(smem_raw);
  char* sV = sK + Cfg::kKBytes;
  char* sQ = sV + Cfg::kVBytes;                     // [stage]
  char* sdO = sQ + S * Cfg::kQBytes;                // [dO stage]
  char* sdS = sdO + Cfg::kDoStages * Cfg::kDoBytes;  // [stage]: dS^T, [key][query]
  char* sPt = sdS + S * Cfg::kDsBytes;               // [stage]: P^T, [key][query] (wide)
  float* sDq = reinterpret_cast<float*>(sPt + S * Cfg::kPtBytes);  // [kMma tiles][64 x 64]
  float* sLse = sDq + Cfg::kMma * 64 * 64;                           // [stage][query]
  float* sDelta = sLse + S * BM;
  u64* kv_full = reinterpret_cast<u64*>(sDelta + S * BM);
  u64* full = kv_full + 1;
  u64* empty = full + S;
  u64* do_full = empty + S;  // wide: dO's one stage
  u64* do_empty = do_full + 1;
  // deterministic: the CTA's turn at a dQ tile
  int* sTurn = reinterpret_cast<int*>(empty + S + (Cfg::kWide ? 2 : 0));

  const WorkTile tile = Cfg::kDeterministic ? ReversedBlocks::tile(p) : GridOrder::tile(p);
  const int n_block = tile.block, h_kv = tile.head, b = tile.batch;
  const int k0 = n_block * BN;
  if constexpr (Layout::kVarlen)  // past its sequence's keys (never deterministic: no turns)
    if (k0 >= Layout::kv_len(p, b)) return;
  const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  // Packed sequences (never deterministic): the slot holds the sequence's query count, read
  // where it is used (held in a register beside a mask's, it spilled 8 bytes).
  static_assert(!(Layout::kVarlen && Cfg::kDeterministic), "the query count takes sTurn's slot");
  auto seq_q_len = [&] {
    if constexpr (Layout::kVarlen) return *reinterpret_cast<volatile int*>(sTurn);
    else return Layout::q_len(p, b);
  };

  if (threadIdx.x == 0) {
    mbar_init(kv_full, 1);
    for (int s = 0; s < S; ++s) {
      mbar_init(full + s, 32);  // the producer warp's lanes, and the TMA bytes
      mbar_init(empty + s, 128 * Cfg::kMma);
    }
    if constexpr (Cfg::kWide) {
      mbar_init(do_full, 1);
      mbar_init(do_empty, 128 * Cfg::kMma);
    }
    mbar_init_fence();
    if constexpr (Layout::kVarlen) *sTurn = Layout::q_len(p, b);
  }
  // Captured tensors' gradients (common/variant_support.h): a shared copy, if any, sits past
  // the kernel's own shared memory; zeroed by every thread before the one CTA-wide barrier.
  var.grads.start(smem_raw + Cfg::kSmemBytes, var.va, threadIdx.x, Cfg::kThreads);
  __syncthreads();

  // Packed sequences: an unmasked walk stops at the batch's own query blocks; a masked one
  // reads them from the block-state table (blocks past the sequence are empty there: held
  // beside the mask's registers, the count spilled).
  using Walk = ColumnWalkOf<Layout::kVarlen && !Variant::kHasMask>;
  using QBlock = typename Walk::Item;
#ifdef AE_KEY_HALVES
  constexpr bool kKeyHalves = !Cfg::kWide;
#else
  constexpr bool kKeyHalves = false;
#endif
  if (wg == 0) {  // producer
    setmaxnreg_dec<Cfg::kProducerRegs>();
    if (warp == 1) dq_writer<Cfg, Walk>(p, sDq, sTurn, b, h_kv, n_block, Variant::kHasMask);
    if (warp != 0) return;
    if (lane == 0) {
      mbar_arrive_expect_tx(kv_full, Cfg::kKBytes + Cfg::kVBytes);
      const auto kr = Layout::kv_tma(p, b, h_kv, k0);
#pragma unroll
      for (int c = 0; c < Cfg::kDqk / 64; ++c)
        tma_load_4d(sK + c * BN * 128, tk, kv_full, c * 64, kr.row, kr.head, kr.batch);
#pragma unroll
      for (int c = 0; c < Cfg::kDv / 64; ++c)
        tma_load_4d(sV + c * BN * 128, tv, kv_full, c * 64, kr.row, kr.head, kr.batch);
    }
    // The producer and every MMA warp walk the same blocks in the same order (the table does
    // not change during the kernel): a walk that could differ between them would deadlock, and
    // would have to be published through the ring instead.
    Walk walk(p, b, h_kv, n_block, Variant::kHasMask, q_blocks_of<Layout, BM>(p, b));
    int it = 0;
    for (QBlock item = walk.pop(p, b, h_kv, n_block); item.hq_off < p.group;
         item = walk.pop(p, b, h_kv, n_block), ++it) {
      const int stage = it % S, use = it / S;
      const int hq = h_kv * p.group + item.hq_off, q0 = item.mb * BM;
      if (use > 0) mbar_wait(empty + stage, (use - 1) & 1);
      if (lane == 0) {  // the tiles first, the row statistics under their flight
        const auto qr = Layout::q_tma(p, b, hq, q0);
        mbar_expect_tx(full + stage, Cfg::kQBytes + (Cfg::kWide ? 0 : Cfg::kDoBytes));
#pragma unroll
        for (int c = 0; c < Cfg::kDqk / 64; ++c)
          tma_load_4d(sQ + stage * Cfg::kQBytes + c * BM * 128, tq, full + stage, c * 64, qr.row,
                      qr.head, qr.batch);
        if constexpr (!Cfg::kWide)
#pragma unroll
          for (int c = 0; c < Cfg::kDv / 64; ++c)
            tma_load_4d(sdO + stage * Cfg::kDoBytes + c * BM * 128, tdo, full + stage, c * 64,
                        qr.row, qr.head, qr.batch);
      }
      if constexpr (Norm::kRowStats || Norm::kLinearRows) {  // rows past the end read as 0
#pragma unroll
        for (int i = lane; i < BM; i += 32) {
          const int row = q0 + i;
          const bool ok = row < seq_q_len();
          const long long off = Layout::stat(p, b, hq, ok ? row : 0);
          sLse[stage * BM + i] = ok ? p.lse2[off] : 0.f;
          sDelta[stage * BM + i] = ok ? p.delta[off] : 0.f;
        }
      }
      mbar_arrive(full + stage);
      if constexpr (Cfg::kWide) {  // dO's one stage, once both warpgroups' dV GEMMs read it
        if (it > 0) mbar_wait(do_empty, (it - 1) & 1);
        if (lane == 0) {
          const auto qr = Layout::q_tma(p, b, hq, q0);
          mbar_arrive_expect_tx(do_full, Cfg::kDoBytes);
#pragma unroll
          for (int c = 0; c < Cfg::kDv / 64; ++c)
            tma_load_4d(sdO + c * BM * 128, tdo, do_full, c * 64, qr.row, qr.head, qr.batch);
        }
      }
    }
    return;
  }

  // MMA warpgroups. From here on no CTA-wide barrier: the producer warps have exited.
  setmaxnreg_inc<Cfg::kMmaRegs>();
  const int cw = wg - 1, g = lane / 4, t = lane % 4;
  // This warp's first key in the block (wide: the warpgroups share the block's 64 keys).
  const int key_wg = Cfg::kWide ? 0 : 64 * cw, key_w = key_wg + 16 * warp;
  const int kv_len = Layout::kv_len(p, b);
  const bool k_tail = k0 + BN > kv_len;
  const char* kA = sK + key_wg * 128;  // this warpgroup's 64 keys of every column block
  const char* vA = sV + key_wg * 128;

  // dK's and dV's columns of this warpgroup's keys (wide: half of them, from dk_col0 / dv_col0).
  float dk[Cfg::kDkCols / 8][4], dv[Cfg::kDvCols / 8][4];
  const int dk_col0 = Cfg::kWide ? cw * Cfg::kDkCols : 0;
  const int dv_col0 = Cfg::kWide ? cw * Cfg::kDvCols : 0;
#pragma unroll
  for (int i = 0; i < Cfg::kDkCols / 8; ++i) dk[i][0] = dk[i][1] = dk[i][2] = dk[i][3] = 0.f;
#pragma unroll
  for (int i = 0; i < Cfg::kDvCols / 8; ++i) dv[i][0] = dv[i][1] = dv[i][2] = dv[i][3] = 0.f;

  mbar_wait(kv_full, 0);
  // Each warpgroup reads its own 64 keys' codes where the table has halves of the keys
  // (AE_KEY_HALVES: planner.cc, block tensors' lookups): kBlockEmpty, its work is skipped.
  using MmaWalk = ColumnWalkOf<Layout::kVarlen && !Variant::kHasMask, kKeyHalves>;
  MmaWalk walk(p, b, h_kv, n_block, Variant::kHasMask, q_blocks_of<Layout, BM>(p, b), cw);
  int it = 0;
  for (typename MmaWalk::Item item = walk.pop(p, b, h_kv, n_block); item.hq_off < p.group;
       item = walk.pop(p, b, h_kv, n_block), ++it) {
    const int stage = it % S;
    const int hq = h_kv * p.group + item.hq_off, q0 = item.mb * BM;
    const char* tQ = sQ + stage * Cfg::kQBytes;
    const char* tdO = sdO + (Cfg::kWide ? 0 : stage) * Cfg::kDoBytes;
    char* tdS = sdS + stage * Cfg::kDsBytes;
    // Deterministic: the CTA's turn at this dQ tile, counted by one warp (its table reads under
    // the GEMMs), handed to the writer with the tile.
    // Register-tight (two score parts), it is counted when the tile is handed over instead.
    [[maybe_unused]] int turn = 0;
    if constexpr (Cfg::kDeterministic && Cfg::kScoreParts == 1)
      if (cw == 0 && warp == 0)
        turn = Cfg::kDqAdds * dq_rank(p, b, hq, item.mb, n_block, walk.states);
    mbar_wait(full + stage, (it / S) & 1);

    const bool check = q0 + BM > seq_q_len() || k_tail || item.code == kBlockPartial;
    // This warpgroup's keys keep nothing of the block (kKeyHalves): no GEMM of its own, its
    // dS^T zeros for dQ's. (ptxas keeps the wgmmas asynchronous under this branch, which
    // reads the walk's ballots; the forward's like it serialized them: C7520.)
    const bool skip = kKeyHalves && item.code == kBlockEmpty;
    u32 pa[BM / 16][4], dsa[BM / 16][4];
    if constexpr (Cfg::kWide) {
      wide_block<Cfg, Layout>(p, var, dk, dv, tQ, tdO, tdS, sPt + stage * Cfg::kPtBytes, sK, sV,
                              sLse + stage * BM, sDelta + stage * BM, do_full, do_empty, it, b,
                              hq, q0, k0 + key_w, key_w, cw, check);
    } else {
      // S^T = K Q^T and dP^T = V dO^T for this warpgroup's 64 keys x the block's 64 queries,
      // kScoreParts query ranges one after the other (fewer live registers), each converted to
      // P^T and dS^T score by score (a copy without checks for tiles that need none), dS^T
      // stored to shared memory (swizzled as TMA would: 16-byte chunk c of row r at c ^ (r % 8))
      // and both packed as register A operands.
#pragma unroll
      for (int part = 0; part < Cfg::kScoreParts; ++part) {
        constexpr int PQ = BM / Cfg::kScoreParts;  // queries per part
        const int qp = part * PQ;
        float st[PQ / 8][4], dpt[PQ / 8][4];
        if (skip) {  // P^T and dS^T are zeros
#pragma unroll
          for (int nt = 0; nt < PQ / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) st[nt][e] = dpt[nt][e] = 0.f;
        } else {
          wgmma_fence();
          gemm_ss_kmajor<PQ, Cfg::kDqk, Cfg::kBf16, true>(st, kA, BN * 128, tQ + qp * 128, BM * 128);
          wgmma_commit();
          gemm_ss_kmajor<PQ, Cfg::kDv, Cfg::kBf16, true>(dpt, vA, BN * 128, tdO + qp * 128, BM * 128);
          wgmma_commit();
          wgmma_wait<0>();
          fence_regs(st);
          fence_regs(dpt);
          const float* lse = sLse + stage * BM + qp;
          const float* delta = sDelta + stage * BM + qp;
          // (the split mask spilled the two score parts' tiles: 12 bytes at 192 + 128, document)
          constexpr bool kSplitMask = Cfg::kScoreParts == 1;
          if (check)
            scores_backward<true, kSplitMask, Layout>(p, var, st, dpt, lse, delta, b, hq, q0 + qp,
                                                      k0 + key_w, true);
          else
            scores_backward<false, kSplitMask, Layout>(p, var, st, dpt, lse, delta, b, hq, q0 + qp,
                                                       k0 + key_w, false);
        }
        u32 pa_part[PQ / 16][4], dsa_part[PQ / 16][4];
        rows::p_to_a<Cfg::kBf16>(pa_part, st);
        rows::p_to_a<Cfg::kBf16>(dsa_part, dpt);
        // dS^T's 16 keys x 16 queries per stmatrix, from the A operand's registers: matrix m of
        // lane l's address is keys 8 (m % 2) .. + 7, queries 8 (m / 2) .. + 7 of the pair.
        const int m = lane / 8, i = lane % 8;
        const u32 ds_row = smem_u32(tdS) + (key_w + i + 8 * (m % 2)) * 128;  // row % 8 == i
#pragma unroll
        for (int kk = 0; kk < PQ / 16; ++kk) {
          const int chunk = (qp + 16 * kk) / 8 + m / 2;  // 16-byte chunk of 8 queries
          stmatrix_x4(ds_row + ((chunk ^ i) << 4), dsa_part[kk]);
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            pa[qp / 16 + kk][e] = pa_part[kk][e];
            dsa[qp / 16 + kk][e] = dsa_part[kk][e];
          }
        }
      }

      // dV += P^T dO and dK += dS^T Q (queries are K; dO and Q read N-major; P^T and dS^T are
      // register A operands), and dQ = dS K once every dS^T it reads is stored. With
      // kDqBeforeDk, dK's GEMM goes after dQ's, and dQ's tile goes to the writer while it runs.
      wgmma_fence();
      const u64 desc_do = smem_desc(tdO, BM * 128);
      if (!skip) {
#pragma unroll
        for (int kk = 0; kk < BM / 16; ++kk)
          wgmma_rs<Cfg::kDv, Cfg::kBf16>(dv, pa[kk], desc_plus(desc_do, kk * 16 * 128), 1);
        if constexpr (!Cfg::kDqBeforeDk)
          wgmma_dk<Cfg>(dk, dsa, tQ);
      }
      wgmma_commit();  // (an empty group where skipped: the waits below count groups)

      // The stored dS^T is visible to wgmma after the fence and the barrier.
      fence_view_async_shared();
      named_bar_sync<1>(128 * Cfg::kMma);
      // Register-tight (two score parts), dV's and dK's GEMMs finish first: their A operands
      // are free before dQ's accumulators are live.
      if constexpr (Cfg::kScoreParts > 1) wgmma_wait<0>();
    }
#pragma unroll 1
    for (int c = 0; c < Cfg::kDqChunks; ++c) {
      const int n0 = Cfg::dq_col(c, cw);
      float* tile_dq = sDq + Cfg::dq_tile(it * Cfg::kDqChunks + c, cw) * 64 * 64;
      float dq[Cfg::kDqN / 8][4];
      // The last chunk's stores read these registers (wide: else ptxas injects one after
      // wide_block's wait and barrier arrival).
      if (c > 0 || Cfg::kWide) wgmma_fence();
      // M (64 queries) and N (kDqN <= 64 columns) are one 64-element block each: the LBOs
      // below (the distance to a next block) are never used; a wider dS^T or dQ tile must set them.
      const u64 desc_ds = uniform_desc(smem_desc(tdS, BM * 128));
      // (a half block's columns start 64 bytes into K's swizzled rows: the swizzle is of the
      // address, so an offset below 128 bytes reads them as TMA placed them)
      const u64 desc_k = uniform_desc(
          smem_desc(sK + (n0 / 64) * BN * 128 + (n0 % 64) * 2, BN * 128));
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk)
        wgmma_ss_mn<Cfg::kDqN, Cfg::kBf16>(dq, desc_plus(desc_ds, kk * 16 * 128),
                                           desc_plus(desc_k, kk * 16 * 128), kk > 0);
      wgmma_commit();
      if constexpr (Cfg::kDqBeforeDk) {
        if (!skip) wgmma_dk<Cfg>(dk, dsa, tQ);
        wgmma_commit();
        wgmma_wait<1>();  // dV and dQ
      } else {
        wgmma_wait<0>();
        // Q, dO and the row statistics of this stage are free once dK and the last chunk ran.
        if (c == Cfg::kDqChunks - 1) mbar_arrive(empty + stage);
      }
      fence_regs(dq);

      // The tile to shared memory (column c of row r at c ^ 8 (r % 8): no bank conflicts) once
      // the writer has read the last one, then handed to it.
      named_bar_sync_at(kDqEmptyBar + cw, 128 + 32);
      if constexpr (Cfg::kDeterministic) {
        if constexpr (Cfg::kScoreParts > 1)
          if (c == 0 && cw == 0 && warp == 0)
            turn = Cfg::kDqAdds * dq_rank(p, b, hq, item.mb, n_block, walk.states);
        if (c == 0 && cw == 0 && threadIdx.x % 128 == 0) *sTurn = turn;  // the last one was read
      }
#pragma unroll
      for (int nt = 0; nt < Cfg::kDqN / 8; ++nt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int row = 16 * warp + g + 8 * r;  // row % 8 == g
          const int chunk = n0 % 64 / 8 + nt;
          *reinterpret_cast<float2*>(tile_dq + row * 64 + 8 * (chunk ^ g) + 2 * t) =
              make_float2(dq[nt][2 * r], dq[nt][2 * r + 1]);
        }
      fence_view_async_shared();
      named_bar_arrive_at(kDqFullBar + cw, 128 + 32);
    }
    if constexpr (Cfg::kDqBeforeDk) {
      wgmma_wait<0>();  // dK
      mbar_arrive(empty + stage);
    }
  }
  fence_regs(dk);
  fence_regs(dv);

  // dK (times the softmax scale) and dV of this thread's keys; only the tensors' columns (a
  // padded head dim's are zeros: csrc/plan/tile_tables.h sm90_padded).
  u16* gdk = Layout::kv_row(p, static_cast<u16*>(p.dk), p.dk_stride, b, h_kv, 0);
  u16* gdv = Layout::kv_row(p, static_cast<u16*>(p.dv), p.dv_stride, b, h_kv, 0);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = k0 + key_w + g + 8 * r;
    if (key >= kv_len) continue;
#pragma unroll
    for (int i = 0; i < Cfg::kDkCols / 8; ++i)
      if (!Cfg::kPadded || dk_col0 + 8 * i < p.d_qk)
        *reinterpret_cast<u32*>(gdk + key * p.dk_stride[2] + dk_col0 + 8 * i + 2 * t) =
            pack2<Cfg::kBf16>(dk[i][2 * r] * p.scale, dk[i][2 * r + 1] * p.scale);
#pragma unroll
    for (int i = 0; i < Cfg::kDvCols / 8; ++i)
      if (!Cfg::kPadded || dv_col0 + 8 * i < p.d_v)
        *reinterpret_cast<u32*>(gdv + key * p.dv_stride[2] + dv_col0 + 8 * i + 2 * t) =
            pack2<Cfg::kBf16>(dv[i][2 * r], dv[i][2 * r + 1]);
  }
  // The MMA warpgroups' gradient additions to global memory (kGradsBar: the producer
  // warpgroup takes no part).
  var.grads.finish(var.va, threadIdx.x - 128, 128 * Cfg::kMma,
                   [] { named_bar_sync<kGradsBar>(128 * Cfg::kMma); });
}

}  // namespace ae::sm90
