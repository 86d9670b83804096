// Forward attention on the mma.sync path (sm_80 and up), FlashAttention-2 style.
//
// One CTA owns BLOCK_M = 16 * M_TILES * WARPS query rows of one (batch, head); each warp
// owns 16 * M_TILES rows.
// The Q tile stays in shared memory; K/V tiles of BLOCK_N keys stream through a two-stage
// cp.async ring. Per tile: S = Q K^T (mma.sync, fp32), the Variant's score_mod and mask,
// online softmax in the log2 domain (exp2, scale folded into log2(e) when there is no
// score_mod), then O += P V with P converted in registers to the A operand.
// Tiles the block walk marks empty are skipped; full tiles skip the mask. Rows are addressed
// through Cfg::Layout (common/kv_layout.h), the normalization is the Variant's policy.
#pragma once

#include "common/block_walk.h"
#include "common/params.h"
#include "common/tile_scheduler.h"
#include "nvidia/exact_pv.h"
#include "nvidia/mma_rows.h"
#include "sm80/shapes.h"
#include "sm80/tile_io.h"

namespace ae::sm80 {

template <int D_QK_, int D_V_, int BLOCK_N_, int WARPS_, int M_TILES_, bool BF16_, class LAYOUT_,
          bool SPLIT_KV_ = false>
struct FwdConfig {
  using Layout = LAYOUT_;
  static constexpr int kDqk = D_QK_, kDv = D_V_, kBlockN = BLOCK_N_, kWarps = WARPS_;
  // 16-row MMA tiles per warp: with 2, each K/V fragment read from shared memory feeds two
  // MMAs, halving the shared-memory traffic per FLOP.
  static constexpr int kMTiles = M_TILES_;
  static constexpr bool kBf16 = BF16_;
  // Built for a split-KV launch (AttnParams::kv_splits): partial outputs for the combine.
  static constexpr bool kSplitKv = SPLIT_KV_;
  static constexpr int kBlockM = 16 * kMTiles * kWarps, kThreads = 32 * kWarps;
  static constexpr int kLdQK = kDqk + 8, kLdV = kDv + 8;  // smem row strides (elements)
  static constexpr int kSmemQ = kBlockM * kLdQK, kSmemK = kBlockN * kLdQK, kSmemV = kBlockN * kLdV;
  static constexpr int kSmemBytes = fwd_smem_bytes(kBlockM, kBlockN, kDqk, kDv);  // the planner's
  static_assert(kSmemBytes == 2 * (kSmemQ + 2 * kSmemK + 2 * kSmemV), "sm80/shapes.h");
  static_assert(kDqk % 16 == 0 && kDv % 16 == 0 && kBlockN % 16 == 0, "tile shapes");
};

template <class Cfg, class Variant>
struct FwdKernel {
  static constexpr int kN8 = Cfg::kBlockN / 8;  // n8 tiles of S per MMA row tile
  static constexpr int kO8 = Cfg::kDv / 8;      // n8 tiles of O per MMA row tile
  static constexpr int kMT = Cfg::kMTiles;
  using Norm = typename Variant::Norm;
  using Layout = typename Cfg::Layout;

  const AttnParams& p;
  const Variant& var;
  int kv0;

  AE_DEVICE void run(char* smem_raw) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const WorkTile tile = HeadsFastest<Cfg::kSplitKv>::tile(p);
    const int m_block = tile.block, h = tile.head, b = tile.batch, q0 = m_block * Cfg::kBlockM;
    if constexpr (Layout::kVarlen)  // past its sequence's queries: nothing to do
      if (q0 >= Layout::q_len(p, b)) return;
    const int wrow = warp * 16 * kMT;  // this warp's first row in the tile
    u16* sQ = reinterpret_cast<u16*>(smem_raw);
    u16* sK = sQ + Cfg::kSmemQ;
    u16* sV = sK + 2 * Cfg::kSmemK;
    const u16* gq = Layout::q_row(p, static_cast<const u16*>(p.q), p.q_stride, b, h, q0);
    // This head's K and V bases live in shared memory, read once per tile: held in registers
    // across the loop next to 192 accumulators, they were what spilled at 64-key tiles. So do
    // the first row, head and batch, read where used (blockIdx, which they replaced, was
    // free to re-read; held, they spilled at D128).
    __shared__ const u16* kv_base[2];
    __shared__ const int* kv_table;  // paged: the batch's row of the page table
    __shared__ int cta[3];
    if (threadIdx.x == 0) {
      const int h_kv = h / p.group;
      kv_base[0] = Layout::kv_head(p, static_cast<const u16*>(p.k), p.k_stride, b, h_kv);
      kv_base[1] = Layout::kv_head(p, static_cast<const u16*>(p.v), p.v_stride, b, h_kv);
      if constexpr (Layout::kPage > 0) kv_table = Layout::table_row(p, b);
      cta[0] = q0, cta[1] = h, cta[2] = b;
    }
    __syncthreads();
    // Each lane's fragment addresses (tile_io.h): Q's rows of this warp, K and V of stage 0
    // (stage 1: kStageK / kStageV bytes further).
    constexpr u32 kStageK = 2 * Cfg::kSmemK, kStageV = 2 * Cfg::kSmemV;
    const u32 q_rows = lane_a<Cfg::kLdQK>(smem_addr(sQ)) + 2 * wrow * Cfg::kLdQK;
    const u32 k_rows = lane_nk<Cfg::kLdQK>(smem_addr(sK));
    const u32 v_cols = lane_kn<Cfg::kLdV>(smem_addr(sV));
    const RowWalk blocks(p, b, h, m_block, Variant::kHasMask, Cfg::kSplitKv, tile.split,
                         Layout::kv_blocks(p, b, Cfg::kBlockN));
    const int n_kv = blocks.n;
    auto next_block = [&](int j) { return blocks.next(j); };
    const TileLoader<Cfg::kBlockN, Cfg::kDqk, Cfg::kThreads> k_loader;
    const TileLoader<Cfg::kBlockN, Cfg::kDv, Cfg::kThreads> v_loader;
    auto load_kv = [&](int j, int stage) {
      const int rows = Layout::kv_len(p, b) - j * Cfg::kBlockN;
      if constexpr (Layout::kPage > 0) {  // each row at its page (tile_io.h load_paged)
        constexpr int kPage = Layout::kPage;
        const int key0 = j * Cfg::kBlockN;
        const int pages = tile_pages<Layout, Cfg::kBlockN>(p, kv_table, key0);
        k_loader.template load_paged<kPage>(sK + stage * Cfg::kSmemK, kv_base[0], p.k_stride,
                                            pages, key0, rows);
        v_loader.template load_paged<kPage>(sV + stage * Cfg::kSmemV, kv_base[1], p.v_stride,
                                            pages, key0, rows);
      } else {
        k_loader.load(sK + stage * Cfg::kSmemK, kv_base[0] + j * Cfg::kBlockN * p.k_stride[2],
                      p.k_stride[2], rows);
        v_loader.load(sV + stage * Cfg::kSmemV, kv_base[1] + j * Cfg::kBlockN * p.v_stride[2],
                      p.v_stride[2], rows);
      }
    };

    int j = next_block(blocks.first);
    load_tile<Cfg::kBlockM, Cfg::kDqk, Cfg::kThreads>(sQ, gq, p.q_stride[2], Layout::q_len(p, b) - q0);
    if (j < n_kv) load_kv(j, 0);
    cp_async_commit();

    float o[kMT][kO8][4];
    rows::RowStats stats[kMT];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
      for (int i = 0; i < kO8; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.f;
      stats[mt].init();
    }
    // Raw plain scores are scaled inside normalize_step's exp2 on unchecked tiles; a scale that
    // is not positive (allowed, if odd) takes the checked path, which scales first.
    constexpr bool kRaw = Variant::kIdentity && Norm::kRawScores;
    const bool raw_ok = Norm::identity_scale(p) > 0.f;
    const bool v_finite = rows::v_all_finite(p);
    // Q's A fragments stay in registers across key tiles where they fit.
    constexpr bool kQInRegs = Cfg::kDqk <= 128 && kMT == 1;
    u32 qf[kQInRegs ? kMT : 1][kQInRegs ? Cfg::kDqk / 16 : 1][4];
    bool q_in_regs = false;

    for (int stage = 0; j < n_kv; stage ^= 1) {
      const int jn = next_block(j + 1);
      if (jn < n_kv) load_kv(jn, stage ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
      __syncthreads();
      const u32 tK = k_rows + stage * kStageK, tV = v_cols + stage * kStageV;

      float s[kMT][kN8][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int i = 0; i < kN8; ++i) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.f;
      if constexpr (kQInRegs) {
        if (!q_in_regs) {
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
            for (int kk = 0; kk < Cfg::kDqk / 16; ++kk)
              load_a<Cfg::kLdQK>(qf[mt][kk], q_rows, 16 * mt, kk * 16);
          q_in_regs = true;
        }
      }
#pragma unroll
      for (int kk = 0; kk < Cfg::kDqk / 16; ++kk) {
        u32 a[kMT][4];
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          if constexpr (kQInRegs) {
#pragma unroll
            for (int i = 0; i < 4; ++i) a[mt][i] = qf[mt][kk][i];
          } else {
            load_a<Cfg::kLdQK>(a[mt], q_rows, 16 * mt, kk * 16);
          }
        }
#pragma unroll
        for (int np = 0; np < kN8 / 2; ++np) {
          u32 r[4];
          load_b_nk<Cfg::kLdQK>(r, tK, np * 16, kk * 16);
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            mma_16816<Cfg::kBf16>(s[mt][2 * np], a[mt], r[0], r[1]);
            mma_16816<Cfg::kBf16>(s[mt][2 * np + 1], a[mt], r[2], r[3]);
          }
        }
      }

      kv0 = j * Cfg::kBlockN;
      const bool check =
          kv0 + Cfg::kBlockN > Layout::kv_len(p, b) || blocks.partial(j) || (kRaw && !raw_ok);
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        const int row0 = cta[0] + wrow + 16 * mt + lane / 4, col0 = kv0 + 2 * (lane % 4);
        if (check)
          rows::score_transform<true, false, Layout, Variant, kN8,
                                AE_MASK_LOADS_OR(rows::MaskLoads::kByRow)>(
              p, var, s[mt], cta[2], cta[1], row0, col0, &stats[mt]);
        else
          rows::score_transform<false, true, Layout>(p, var, s[mt], cta[2], cta[1], row0, col0,
                                                     &stats[mt]);
      }

      const float scale = rows::weight_scale<Variant>(p, kRaw && !check);
      if constexpr (AE_POOL_BLOCK > 0)  // the gate-training forward
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
          rows::store_block_max<AE_POOL_BLOCK>(p, s[mt], scale, cta[2], cta[1],
                                               cta[0] + wrow + 16 * mt + lane / 4, kv0);
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) rows::normalize<Norm>(s[mt], o[mt], stats[mt], scale);

      // A tile with masked keys whose V holds inf or nan: P V score by score (exact_pv.h).
      const bool scan = rows::check_v<Variant>(v_finite, blocks.partial(j), kv0 + Cfg::kBlockN,
                                               Layout::kv_len(p, b));
      if (scan && __syncthreads_or(rows::any_nonfinite<Cfg::kBf16>(
                      reinterpret_cast<const char*>(sV + stage * Cfg::kSmemV), Cfg::kBlockN,
                      Cfg::kDv / 8, 2 * Cfg::kLdV, threadIdx.x, Cfg::kThreads))) {
        const u16* v_tile = sV + stage * Cfg::kSmemV;
        auto v_pair = [&](int key, int col) {
          return *reinterpret_cast<const u32*>(v_tile + key * Cfg::kLdV + col);
        };
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          u32 pa[kN8 / 2][4];
          rows::p_to_a<Cfg::kBf16>(pa, s[mt]);
          rows::pv_exact<Cfg::kBf16, Cfg::kBlockN>(o[mt], pa, v_pair);
        }
      } else {
#pragma unroll
        for (int kk = 0; kk < Cfg::kBlockN / 16; ++kk) {
          u32 a[kMT][4];
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt)
            acc_to_a<Cfg::kBf16>(a[mt], s[mt][2 * kk], s[mt][2 * kk + 1]);
#pragma unroll
          for (int dp = 0; dp < kO8 / 2; ++dp) {
            u32 r[4];
            load_b_kn<Cfg::kLdV>(r, tV, kk * 16, dp * 16);
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt) {
              mma_16816<Cfg::kBf16>(o[mt][2 * dp], a[mt], r[0], r[1]);
              mma_16816<Cfg::kBf16>(o[mt][2 * dp + 1], a[mt], r[2], r[3]);
            }
          }
        }
      }
      __syncthreads();  // every warp is done with this stage before it is refilled
      j = jn;
    }
    cp_async_wait<0>();

    // Epilogue: normalize, write O (bf16/fp16) and the row statistic.
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
      rows::store_rows<Cfg::kBf16, Norm, Layout, Cfg::kSplitKv>(
          p, var, o[mt], stats[mt], cta[2], cta[1], cta[0] + wrow + 16 * mt + lane / 4);
  }
};

template <class Cfg, class Variant>
AE_DEVICE void attention_fwd(const AttnParams& p, const Variant& var) {
  extern __shared__ __align__(16) char smem[];
  FwdKernel<Cfg, Variant> k{p, var, 0};
  k.run(smem);
}

}  // namespace ae::sm80
