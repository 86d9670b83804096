// Forward attention for AMD CDNA2 (gfx90a: MI210, MI250), MFMA with fp32 accumulators, wave64.
//
// One block owns kBlockM = N * kWaves query rows of one (batch, head); each wave owns N rows
// (N = 32: MFMA 32x32x8, N = 16: 16x16x16; gfx90a/mfma.h). The wave computes the transposed
// products S^T = K Q^T and O^T = V^T P^T: a lane then holds one query row (its MFMA column)
// and part of its keys, so a row's max and sum are 1 or 2 cross-lane steps, O's rescale is a
// per-lane factor, and S^T's C values are P^T's B operand as they are (no shuffles). Q stays
// in registers (the B operand of every S^T k-step); K and V pass through LDS, one block ahead
// in registers (gfx90a/tile_io.h). Per key block: S^T by MFMA, the Variant's score_mod and
// mask, the normalization's online step in the log2 domain (exp2), then O^T += V^T P^T.
// Blocks the walk marks empty are skipped, full blocks skip the mask; rows are addressed
// through Cfg::Layout. Same ABI as the sm80 forward: (AttnParams, VariantArgs).
#pragma once

#include "common/block_walk.h"
#include "common/params.h"
#include "common/tile_scheduler.h"
#include "gfx90a/mfma.h"
#include "gfx90a/rows.h"
#include "gfx90a/shapes.h"
#include "gfx90a/tile_io.h"

// AE_EXACT_PV=0 (KernelSpec::trust_v): V trusted finite at masked keys, its check compiled out.
#ifndef AE_CHECK_V
#define AE_CHECK_V 1
#endif

namespace ae::gfx90a {

template <int D_QK_, int D_V_, int BLOCK_M_, int BLOCK_N_, int WAVES_, bool BF16_, class LAYOUT_,
          bool SPLIT_KV_ = false>
struct FwdConfig {
  using Layout = LAYOUT_;
  static constexpr int kDqk = D_QK_, kDv = D_V_, kBlockM = BLOCK_M_, kBlockN = BLOCK_N_;
  static constexpr int kWaves = WAVES_, kThreads = 64 * kWaves;
  static constexpr int kRows = kBlockM / kWaves;  // N: query rows per wave
  static constexpr bool kBf16 = BF16_;
  static constexpr bool kSplitKv = SPLIT_KV_;  // partial outputs for the combine step
  static constexpr int kLdK = kDqk + kLdsPad, kLdV = kBlockN + kLdsPad;
  static constexpr int kLdsBytes = fwd_lds_bytes(kBlockN, kDqk, kDv);  // the planner's
  static_assert(kLdsBytes == 2 * (kBlockN * kLdK + kDv * kLdV), "gfx90a/shapes.h");
  static_assert(kLdsBytes <= kLdsPerCu, "LDS");
  static_assert(kRows == 16 || kRows == 32, "16 or 32 rows per wave");
  static_assert(kDqk % Mfma<kRows>::kDepth == 0 && kDv % kRows == 0 && kBlockN % kRows == 0,
                "tile shapes");
};

template <class Cfg, class Variant>
struct FwdKernel {
  static constexpr int N = Cfg::kRows;
  using M = Mfma<N>;
  using Acc = typename M::Acc;
  using Norm = typename Variant::Norm;
  using Layout = typename Cfg::Layout;
  static constexpr int kSt = Cfg::kBlockN / N;         // S^T tiles per key block
  static constexpr int kOt = Cfg::kDv / N;             // O^T tiles
  static constexpr int kQk = Cfg::kDqk / M::kDepth;    // k-steps of K Q^T
  static constexpr int kPk = Cfg::kBlockN / M::kDepth; // k-steps of V^T P^T
  static constexpr int kPerTile = N / M::kDepth;       // of those, per S^T tile
  // LDS operand loads in flight per MFMA group: the compiler would otherwise issue every
  // load of a loop first, and their registers (2 per MFMA) are what a D128 tile lacks.
  static constexpr int kLoadGroup = 4;

  const AttnParams& p;
  const Variant& var;

  AE_DEVICE void run(char* lds) {
    const int wave = threadIdx.x / 64, lane = threadIdx.x % 64, j = lane % N, g = lane / N;
    const WorkTile tile = HeadsFastest<Cfg::kSplitKv>::tile(p);
    const int b = tile.batch, h = tile.head, h_kv = h / p.group;
    if constexpr (Layout::kVarlen)  // past its sequence's queries: nothing to do
      if (tile.block * Cfg::kBlockM >= Layout::q_len(p, b)) return;
    const int row = tile.block * Cfg::kBlockM + wave * N + j;  // this lane's query row
    u16* sk = reinterpret_cast<u16*>(lds);
    u16* svt = sk + Cfg::kBlockN * Cfg::kLdK;
    // This lane's A operands at (0, 0) of K and of V^T; every other operand is a constant
    // offset from them, which the compiler folds into the LDS instruction (computed per read
    // from j and g, each read got an address register of its own).
    const u16* k_lane = sk + j * Cfg::kLdK + 4 * g;
    const u16* vt_lane = svt + j * Cfg::kLdV + 4 * g;
    const u16* kb = Layout::kv_head(p, static_cast<const u16*>(p.k), p.k_stride, b, h_kv);
    const u16* vb = Layout::kv_head(p, static_cast<const u16*>(p.v), p.v_stride, b, h_kv);
    const int kv_len = Layout::kv_len(p, b);

    const RowWalk blocks(p, b, h, tile.block, Variant::kHasMask, Cfg::kSplitKv, tile.split,
                         Layout::kv_blocks(p, b, Cfg::kBlockN));
    KvPrefetch<Cfg::kBlockN, Cfg::kDqk, Cfg::kDv, Cfg::kThreads> next_kv;
    auto load_kv = [&](int j) {
      if constexpr (Layout::kPage > 0)  // each row at its page (the batch's row of the table)
        next_kv.template load_paged<Layout>(p, Layout::table_row(p, b), kb, vb, j, kv_len);
      else
        next_kv.load(kb, vb, p.k_stride[2], p.v_stride[2], j, kv_len);
    };
    int jb = blocks.next(blocks.first);
    if (jb < blocks.n) load_kv(jb);

    // Q's B operands: 4 values of the lane's row per k-step (zeros past q_len).
    u64 qf[kQk];
    {
      const bool in = row < Layout::q_len(p, b);
      const u16* gq = Layout::q_row(p, static_cast<const u16*>(p.q), p.q_stride, b, h, in ? row : 0);
#pragma unroll
      for (int kd = 0; kd < kQk; ++kd) {
        const u64 x = *reinterpret_cast<const u64*>(gq + kd * M::kDepth + 4 * g);  // row 0 if !in
        qf[kd] = in ? x : 0;
      }
    }

    Acc o[kOt];
#pragma unroll
    for (int dt = 0; dt < kOt; ++dt) o[dt] = Acc{};
    RowStats st;
    st.init();

    while (jb < blocks.n) {
      const int jn = blocks.next(jb + 1);
      __syncthreads();  // every wave is done with the last block's LDS
      next_kv.store(sk, svt);
      __syncthreads();
      if (jn < blocks.n) load_kv(jn);

      // S^T = K Q^T: tile t's A operand is 4 head-dim values of key N t + j.
      Acc s[kSt];
#pragma unroll
      for (int t = 0; t < kSt; ++t) s[t] = Acc{};
#pragma unroll
      for (int kd = 0; kd < kQk; ++kd) {
#pragma unroll
        for (int t = 0; t < kSt; ++t)
          s[t] = M::template mma<Cfg::kBf16>(
              lds_u64(k_lane + N * t * Cfg::kLdK + kd * M::kDepth), qf[kd], s[t]);
        if (kd % kLoadGroup == kLoadGroup - 1) lds_fence();
      }

      const int kv0 = jb * Cfg::kBlockN;
      const bool check = kv0 + Cfg::kBlockN > kv_len || blocks.partial(jb);
      const bool raw = rows::raw_scores<Variant>(p, check);
      if (check)
        score_transform<true, false, N, Layout>(p, var, s, b, h, row, kv0, g, st);
      else if (raw)
        score_transform<false, true, N, Layout>(p, var, s, b, h, row, kv0, g, st);
      else
        score_transform<false, false, N, Layout>(p, var, s, b, h, row, kv0, g, st);
      const float alpha = normalize_step<Norm, N>(s, st, rows::score_factor<Variant>(p, raw));
      // Unconditional (32 packed multiplies at D128): skipped under a branch where alpha is 1,
      // O's registers were copied around the branch, and a D128 tile spilled.
      if constexpr (Norm::kRowStats) {
#pragma unroll
        for (int dt = 0; dt < kOt; ++dt) o[dt] *= alpha;
      }

      // P^T's B operands: S^T tile t's values 4 kk .. 4 kk + 3 are k-step kPerTile t + kk.
      u64 pb[kPk];
#pragma unroll
      for (int t = 0; t < kSt; ++t)
#pragma unroll
        for (int kk = 0; kk < kPerTile; ++kk)
          pb[kPerTile * t + kk] = pack4<Cfg::kBf16>(s[t][4 * kk], s[t][4 * kk + 1],
                                                    s[t][4 * kk + 2], s[t][4 * kk + 3]);

      // A block with masked keys whose V holds inf or nan (exact): the MFMA reads V's
      // non-finite values as 0 (so a masked key's P = 0 adds 0, not 0 * inf = nan), and
      // pv_fix then adds P V for them where P != 0. Not a branch around the MFMAs: one that
      // wrote O's registers on both sides copied them, and the D128 tile spilled.
      const bool exact = AE_CHECK_V && (Variant::kScoreMasks || check) &&
                         __syncthreads_or(any_nonfinite<Cfg::kBf16, Cfg::kBlockN, Cfg::kDv,
                                                        Cfg::kLdV>(svt, threadIdx.x, Cfg::kThreads));
      // O^T += V^T P^T: tile dt's A operand is 4 keys of head-dim row N dt + j.
#pragma unroll
      for (int ks = 0; ks < kPk; ++ks)
#pragma unroll
        for (int dt = 0; dt < kOt; ++dt) {
          const u64 a = lds_u64(vt_lane + N * dt * Cfg::kLdV + ks * M::kDepth);
          o[dt] = M::template mma<Cfg::kBf16>(exact ? finite4<Cfg::kBf16>(a) : a, pb[ks], o[dt]);
          if ((ks * kOt + dt) % kLoadGroup == kLoadGroup - 1) lds_fence();
        }
      if (exact) pv_fix(o, pb, svt, j, g);
      jb = jn;
    }
    store_rows<Cfg::kBf16, Norm, Layout, Cfg::kSplitKv, N>(p, var, o, st, b, h, row, g);
  }

  // The non-finite values of V^T's block that the MFMAs read as 0, added where P != 0 (plain
  // math's P V there: inf or nan). Key e of k-step ks is value e % 4 of lane group e / 4's
  // P^T operand (of the lane's own row j). Rare and slow: loops over the keys, not unrolled,
  // one per O^T tile and k-step, so that few registers are live beside the kernel's.
  AE_DEVICE void pv_fix(Acc (&o)[kOt], const u64 (&pb)[kPk], const u16* svt, int j, int g) {
    // g and j through an empty asm: the loops' addresses are then computed here, not hoisted out of
    // the main loop into registers of their own (43 more VGPRs at D128).
    asm volatile("" : "+v"(g), "+v"(j));
#pragma unroll
    for (int dt = 0; dt < kOt; ++dt)
#pragma unroll
      for (int ks = 0; ks < kPk; ++ks) {
#pragma unroll 1
        for (int e = 0; e < M::kDepth; ++e) {
          const u32 half = (e % 4) < 2 ? static_cast<u32>(pb[ks]) : static_cast<u32>(pb[ks] >> 32);
          float lo, hi;
          unpack2<Cfg::kBf16>(__shfl(half, (e / 4) * N + j), lo, hi);
          const float pr = (e % 2) ? hi : lo;
          const u16* col = svt + (N * dt) * Cfg::kLdV + ks * M::kDepth + e;  // key column
#pragma unroll
          for (int v = 0; v < M::kC; ++v) {
            float x, unused;
            unpack2<Cfg::kBf16>(col[c_row<N>(v, g) * Cfg::kLdV], x, unused);
            // (bitwise &, a product computed either way: with && each score was a branch)
            const bool add = (pr != 0.f) & !(fabsf(x) < __int_as_float(0x7f800000));
            const float px = pr * x;
            o[dt][v] += add ? px : 0.f;
          }
        }
      }
  }
};

template <class Cfg, class Variant>
AE_DEVICE void attention_fwd(const AttnParams& p, const Variant& var) {
  extern __shared__ __attribute__((aligned(16))) char lds[];
  FwdKernel<Cfg, Variant>{p, var}.run(lds);
}

}  // namespace ae::gfx90a
