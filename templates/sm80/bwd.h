// Backward attention on the mma.sync path (sm_80 and up), FlashAttention-2 style,
// KV-stationary: a CTA owns BLOCK = 16 * WARPS keys of one (batch, kv head) and loops over
// the query heads of its GQA group and their query blocks. Each warp owns 16 keys.
// Per query block: S^T = K Q^T and dP^T = V dO^T (mma.sync), P recomputed from the LSE,
// dS = P * (dP - delta) * d score_mod / d score (Variant::grad, which also adds the
// gradients of captured tensors), dV += P^T dO and dK += dS^T Q in registers, and
// dQ += dS K through shared memory into an fp32 buffer with atomics.
// SPLIT > 1 cuts the head dims into slices, one CTA per slice (for head dims > 128, where
// dK and dV would not fit in registers); S and dP are then computed once per slice.
#pragma once

#include "common/params.h"
#include "sm80/tile_io.h"

namespace ae::sm80 {

template <int D_QK_, int D_V_, int WARPS_, int SPLIT_, bool BF16_>
struct BwdConfig {
  static constexpr int kDqk = D_QK_, kDv = D_V_, kWarps = WARPS_, kSplit = SPLIT_;
  static constexpr bool kBf16 = BF16_;
  static constexpr int kBlock = 16 * kWarps, kThreads = 32 * kWarps;
  static constexpr int kSliceQK = kDqk / kSplit, kSliceV = kDv / kSplit;
  static constexpr int kLdQK = kDqk + 8, kLdV = kDv + 8, kLdS = kBlock + 8;
  static constexpr int kSmemQK = kBlock * kLdQK, kSmemV = kBlock * kLdV;
  static_assert(kSliceQK % 16 == 0 && kSliceV % 16 == 0, "head-dim slices of 16");
};

template <class Cfg, class Variant>
struct BwdKernel {
  static constexpr int kB = Cfg::kBlock;
  static constexpr int kN8 = kB / 8;
  // Query columns per chunk: fewer where dK and dV take most of the registers.
  static constexpr int kQC = Cfg::kSliceQK + Cfg::kSliceV > 192 ? 16 : 32, kC8 = kQC / 8;
  const AttnParams& p;
  const Variant& var;

  AE_DEVICE void run(char* smem_raw) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int n_block = blockIdx.x, split = blockIdx.y % Cfg::kSplit;
    const int h_kv = blockIdx.y / Cfg::kSplit, b = blockIdx.z;
    const int k0 = n_block * kB, kw0 = warp * 16;
    u16* sQ = reinterpret_cast<u16*>(smem_raw);
    u16* sK = sQ + Cfg::kSmemQK;
    u16* sdO = sK + Cfg::kSmemQK;
    u16* sV = sdO + Cfg::kSmemV;
    u16* sdS = sV + Cfg::kSmemV;
    float* sLse = reinterpret_cast<float*>(sdS + kB * Cfg::kLdS);
    float* sDelta = sLse + kB;

    load_tile<kB, Cfg::kDqk, Cfg::kThreads>(
        sK, static_cast<const u16*>(p.k) + b * p.k_stride[0] + h_kv * p.k_stride[1] + k0 * p.k_stride[2],
        p.k_stride[2], p.kv_len - k0);
    load_tile<kB, Cfg::kDv, Cfg::kThreads>(
        sV, static_cast<const u16*>(p.v) + b * p.v_stride[0] + h_kv * p.v_stride[1] + k0 * p.v_stride[2],
        p.v_stride[2], p.kv_len - k0);
    cp_async_commit();

    float dk[Cfg::kSliceQK / 8][4], dv[Cfg::kSliceV / 8][4];
#pragma unroll
    for (int i = 0; i < Cfg::kSliceQK / 8; ++i) dk[i][0] = dk[i][1] = dk[i][2] = dk[i][3] = 0.f;
#pragma unroll
    for (int i = 0; i < Cfg::kSliceV / 8; ++i) dv[i][0] = dv[i][1] = dv[i][2] = dv[i][3] = 0.f;

    for (int hq = h_kv * p.group; hq < (h_kv + 1) * p.group; ++hq) {
      const unsigned char* state =
          p.block_state ? p.block_state + b * p.state_stride_b + hq * p.state_stride_h : nullptr;
      const long long row_base = (static_cast<long long>(b) * p.q_heads + hq) * p.q_len;
      for (int mb = 0; mb < p.n_q_blocks; ++mb) {
        const int st_code = state ? state[static_cast<long long>(mb) * p.n_kv_blocks + n_block] : 2;
        if (st_code == 0) continue;
        const int q0 = mb * kB;
        load_tile<kB, Cfg::kDqk, Cfg::kThreads>(
            sQ, static_cast<const u16*>(p.q) + b * p.q_stride[0] + hq * p.q_stride[1] + q0 * p.q_stride[2],
            p.q_stride[2], p.q_len - q0);
        load_tile<kB, Cfg::kDv, Cfg::kThreads>(
            sdO, static_cast<const u16*>(p.dout) + b * p.do_stride[0] + hq * p.do_stride[1] + q0 * p.do_stride[2],
            p.do_stride[2], p.q_len - q0);
        cp_async_commit();
        for (int i = threadIdx.x; i < kB; i += Cfg::kThreads) {
          const int row = q0 + i;
          float lse2 = 0.f, delta = 0.f;
          if (row < p.q_len) {
            const float lse = p.lse[row_base + row];
            // A row with nothing kept has lse -inf: +inf makes every P of it exactly 0.
            lse2 = lse == neg_inf() ? -neg_inf() : lse * kLog2e;
            if constexpr (Variant::kSoftmax) delta = p.delta[row_base + row];
          }
          sLse[i] = lse2;
          sDelta[i] = delta;
        }
        cp_async_wait<0>();
        __syncthreads();

        const bool check = q0 + kB > p.q_len || k0 + kB > p.kv_len || st_code == 1;
        // Query columns in chunks of kQC keep S^T and dP^T small enough for registers.
#pragma unroll 1
        for (int c0 = 0; c0 < kB; c0 += kQC) {
          float st[kC8][4], dpt[kC8][4];
#pragma unroll
          for (int i = 0; i < kC8; ++i)
#pragma unroll
            for (int e = 0; e < 4; ++e) st[i][e] = dpt[i][e] = 0.f;
#pragma unroll
          for (int kk = 0; kk < Cfg::kDqk / 16; ++kk) {
            u32 a[4];
            load_a<Cfg::kLdQK>(a, sK, kw0, kk * 16);
#pragma unroll
            for (int np = 0; np < kC8 / 2; ++np) {
              u32 r[4];
              load_b_nk<Cfg::kLdQK>(r, sQ, c0 + np * 16, kk * 16);
              mma_16816<Cfg::kBf16>(st[2 * np], a, r[0], r[1]);
              mma_16816<Cfg::kBf16>(st[2 * np + 1], a, r[2], r[3]);
            }
          }
#pragma unroll
          for (int kk = 0; kk < Cfg::kDv / 16; ++kk) {
            u32 a[4];
            load_a<Cfg::kLdV>(a, sV, kw0, kk * 16);
#pragma unroll
            for (int np = 0; np < kC8 / 2; ++np) {
              u32 r[4];
              load_b_nk<Cfg::kLdV>(r, sdO, c0 + np * 16, kk * 16);
              mma_16816<Cfg::kBf16>(dpt[2 * np], a, r[0], r[1]);
              mma_16816<Cfg::kBf16>(dpt[2 * np + 1], a, r[2], r[3]);
            }
          }

          // P and dS, element by element; rows of st are keys, columns queries.
#pragma unroll
          for (int nt = 0; nt < kC8; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int key = k0 + kw0 + g + 8 * (e >> 1), ql = c0 + nt * 8 + 2 * t + (e & 1);
              const int q_idx = q0 + ql;
              const float s = st[nt][e] * p.scale;
              const float x = Variant::kIdentity ? s : var.score(s, b, hq, q_idx, key);
              bool keep = true;
              if (check) {
                keep = q_idx < p.q_len && key < p.kv_len;
                if constexpr (Variant::kHasMask) keep = keep && var.mask(b, hq, q_idx, key);
              }
              float prob, dx;
              if constexpr (Variant::kSoftmax) {
                prob = keep ? fast_exp2(x * kLog2e - sLse[ql]) : 0.f;
                dx = prob * (dpt[nt][e] - sDelta[ql]);
              } else {
                prob = keep ? x : 0.f;
                dx = keep ? dpt[nt][e] : 0.f;
              }
              float ds = dx;
              if constexpr (!Variant::kIdentity)
                ds = dx == 0.f ? 0.f : var.grad(s, b, hq, q_idx, key, dx, split == 0);
              st[nt][e] = prob;
              dpt[nt][e] = ds;
            }
          }

          // dV += P^T dO and dK += dS^T Q, on this CTA's head-dim slice.
#pragma unroll
          for (int kk = 0; kk < kC8 / 2; ++kk) {
            u32 a[4];
            acc_to_a<Cfg::kBf16>(a, st[2 * kk], st[2 * kk + 1]);
#pragma unroll
            for (int dp = 0; dp < Cfg::kSliceV / 16; ++dp) {
              u32 r[4];
              load_b_kn<Cfg::kLdV>(r, sdO, c0 + kk * 16, split * Cfg::kSliceV + dp * 16);
              mma_16816<Cfg::kBf16>(dv[2 * dp], a, r[0], r[1]);
              mma_16816<Cfg::kBf16>(dv[2 * dp + 1], a, r[2], r[3]);
            }
            acc_to_a<Cfg::kBf16>(a, dpt[2 * kk], dpt[2 * kk + 1]);
#pragma unroll
            for (int dp = 0; dp < Cfg::kSliceQK / 16; ++dp) {
              u32 r[4];
              load_b_kn<Cfg::kLdQK>(r, sQ, c0 + kk * 16, split * Cfg::kSliceQK + dp * 16);
              mma_16816<Cfg::kBf16>(dk[2 * dp], a, r[0], r[1]);
              mma_16816<Cfg::kBf16>(dk[2 * dp + 1], a, r[2], r[3]);
            }
          }

          // dS to shared memory as [query][key], for dQ below.
#pragma unroll
          for (int nt = 0; nt < kC8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e)
              sdS[(c0 + nt * 8 + 2 * t + (e & 1)) * Cfg::kLdS + kw0 + g + 8 * (e >> 1)] =
                  static_cast<u16>(pack2<Cfg::kBf16>(dpt[nt][e], 0.f) & 0xffffu);
        }

        // dQ += dS K for 16 query rows per warp, into the fp32 buffer.
        __syncthreads();
        float dq[Cfg::kSliceQK / 8][4];
#pragma unroll
        for (int i = 0; i < Cfg::kSliceQK / 8; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < kN8 / 2; ++kk) {
          u32 a[4];
          load_a<Cfg::kLdS>(a, sdS, warp * 16, kk * 16);
#pragma unroll
          for (int dp = 0; dp < Cfg::kSliceQK / 16; ++dp) {
            u32 r[4];
            load_b_kn<Cfg::kLdQK>(r, sK, kk * 16, split * Cfg::kSliceQK + dp * 16);
            mma_16816<Cfg::kBf16>(dq[2 * dp], a, r[0], r[1]);
            mma_16816<Cfg::kBf16>(dq[2 * dp + 1], a, r[2], r[3]);
          }
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int row = q0 + warp * 16 + g + 8 * r;
          if (row >= p.q_len) continue;
          float* dst = p.dq_accum + (row_base + row) * Cfg::kDqk + split * Cfg::kSliceQK + 2 * t;
#pragma unroll
          for (int i = 0; i < Cfg::kSliceQK / 8; ++i) {
#if __CUDA_ARCH__ >= 900  // one vector reduction instead of two atomics
            asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(dst + i * 8),
                         "f"(dq[i][2 * r] * p.scale), "f"(dq[i][2 * r + 1] * p.scale)
                         : "memory");
#else
            atomicAdd(dst + i * 8, dq[i][2 * r] * p.scale);
            atomicAdd(dst + i * 8 + 1, dq[i][2 * r + 1] * p.scale);
#endif
          }
        }
        __syncthreads();  // sQ, sdO, sdS are refilled next
      }
    }

    // dK (times the softmax scale) and dV for this CTA's keys and slice.
    u16* gdk = static_cast<u16*>(p.dk) + b * p.dk_stride[0] + h_kv * p.dk_stride[1];
    u16* gdv = static_cast<u16*>(p.dv) + b * p.dv_stride[0] + h_kv * p.dv_stride[1];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int key = k0 + kw0 + g + 8 * r;
      if (key >= p.kv_len) continue;
#pragma unroll
      for (int i = 0; i < Cfg::kSliceQK / 8; ++i)
        *reinterpret_cast<u32*>(gdk + key * p.dk_stride[2] + split * Cfg::kSliceQK + i * 8 + 2 * t) =
            pack2<Cfg::kBf16>(dk[i][2 * r] * p.scale, dk[i][2 * r + 1] * p.scale);
#pragma unroll
      for (int i = 0; i < Cfg::kSliceV / 8; ++i)
        *reinterpret_cast<u32*>(gdv + key * p.dv_stride[2] + split * Cfg::kSliceV + i * 8 + 2 * t) =
            pack2<Cfg::kBf16>(dv[i][2 * r], dv[i][2 * r + 1]);
    }
  }
};

template <class Cfg, class Variant>
AE_DEVICE void attention_bwd(const AttnParams& p, const Variant& var) {
  extern __shared__ __align__(16) char smem[];
  BwdKernel<Cfg, Variant> k{p, var};
  k.run(smem);
}

}  // namespace ae::sm80
