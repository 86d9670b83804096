// Linear attention's chunked backward on the mma.sync path (sm_80 and up). After the forward's
// state pass has stored each chunk's start state S (chunk_states) again:
//   linear_dstate: the reverse pass (linear_fwd.h carry_state<Cfg, true>): dS, the gradient of
//     each chunk's end state, into dchunk_states; the initial state's into dstate0.
//   linear_grads: per chunk (independent). Scalar decays, with D_ij = exp(A_i - A_j) for j <= i
//     (else 0), w_j = exp(A_last - A_j), dP = scale dO V^T o D and P = scale Q K^T o D:
//       dq_i = scale exp(A_i) dO_i S^T + (dP K)_i
//       dk_j = (dP^T Q)_j + w_j V_j dS^T
//       dv_j = (P^T dO)_j + w_j K_j dS
//       da_t = sum_{i >= t} (q_i . dq_i - k_i . dk_i) + dL,
//       dL = exp(A_last) <S, dS> + sum_j w_j k_j^T dS v_j
//     (the decays' gradient: what A_i's and A_last's terms give, each a_t in every A_i, i >= t,
//     and in A_last). Per key channel (GLA) the factors go inside the channel sums, dP =
//     scale dO V^T (j <= i) has none, P_ij = scale sum_c q_ic k_jc exp(A_ic - A_jc), and per
//     channel c:
//       dq_ic = scale exp(A_ic) (dO_i S^T)_c + sum_{j <= i} dP_ij k_jc exp(A_ic - A_jc)
//       dk_jc = sum_{i >= j} dP_ij q_ic exp(A_ic - A_jc) + exp(A_Lc - A_jc) (V_j dS^T)_c
//       dv_j = (P^T dO)_j + (K_j o exp(A_L - A_j)) dS
//       da_tc = sum_{i >= t} (q_ic dq_ic - k_ic dk_ic) + dL_c,
//       dL_c = exp(A_Lc) <S_c, dS_c> + sum_j k_jc exp(A_Lc - A_jc) (V_j dS^T)_c
//     (L: the chunk's last token, S_c and dS_c rows of the states). A log-decay below
//     kLinMinLogDecay was clamped: its gradient is 0.
#pragma once

#include "sm80/linear_fwd.h"

namespace ae::sm80 {

template <class Cfg>
AE_DEVICE void linear_dstate(const LinearParams& p) {
  carry_state<Cfg, true>(p);
}

// This thread's two rows' dot products of an accumulator tile (the C layout, `cols` columns)
// with the same rows of a 16-bit shared tile (row stride LD), summed over the row's four
// lanes: rows r0 and r0 + 8.
template <bool kBf16, int LD, int kN8>
AE_DEVICE void row_dots(const float (&acc)[kN8][4], const u16* tile, int r0, float (&dot)[2]) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    float sum = 0.f;
#pragma unroll
    for (int nt = 0; nt < kN8; ++nt) {
      float x0, x1;
      unpack2<kBf16>(*reinterpret_cast<const u32*>(tile + (r0 + 8 * half) * LD + nt * 8 + 2 * (lane % 4)), x0, x1);
      sum = fmaf(acc[nt][2 * half], x0, fmaf(acc[nt][2 * half + 1], x1, sum));
    }
    sum += shfl_xor(sum, 1);
    sum += shfl_xor(sum, 2);
    dot[half] = sum;
  }
}

// dP or P for this warp's query rows (this thread's r0, r0 + 8): X_i Y^T over KD columns (X at
// x_at: lane_a of the warp's rows; Y at y_at: lane_nk, [C][KD + 8]), o D (kDecay; else only
// the mask j <= i), times the scale.
template <class Cfg, int KD, bool kDecay = true>
AE_DEVICE void masked_scores(const LinearParams& p, float (&s)[Cfg::kChunk / 8][4], u32 x_at,
                             u32 y_at, const float* s_A, int r0) {
  constexpr int C = Cfg::kChunk;
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int nt = 0; nt < C / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
  mma_xyt<Cfg::kBf16, KD, KD + 8>(s, x_at, y_at);
  const float A0 = kDecay ? s_A[r0] : 0.f, A8 = kDecay ? s_A[r0 + 8] : 0.f;
#pragma unroll
  for (int nt = 0; nt < C / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int i = r0 + 8 * (e >> 1), j = nt * 8 + 2 * (lane % 4) + (e & 1);
      const float d = kDecay ? lin_exp((e >> 1 ? A8 : A0) - s_A[j]) : 1.f;
      s[nt][e] = j <= i ? s[nt][e] * p.scale * d : 0.f;
    }
}

// A tile of scores (the C layout, this warp's rows r0, r0 + 8) into a [C][C + 8] 16-bit tile.
template <class Cfg>
AE_DEVICE void scores_to_smem(u16* tile, const float (&s)[Cfg::kChunk / 8][4], int r0) {
  constexpr int C = Cfg::kChunk, LC = C + 8;
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int nt = 0; nt < C / 8; ++nt)
#pragma unroll
    for (int half = 0; half < 2; ++half)
      *reinterpret_cast<u32*>(tile + (r0 + 8 * half) * LC + nt * 8 + 2 * (lane % 4)) =
          pack2<Cfg::kBf16>(s[nt][2 * half], s[nt][2 * half + 1]);
}

template <class Cfg>
AE_DEVICE void linear_grads_scalar(const LinearParams& p) {
  constexpr int C = Cfg::kChunk, DK = Cfg::kDk, DV = Cfg::kDv;
  constexpr int LQ = DK + 8, LV = DV + 8, LC = C + 8;
  constexpr bool kBf16 = Cfg::kBf16;
  extern __shared__ __align__(16) char smem[];
  u16* sQ = reinterpret_cast<u16*>(smem);  // [C][LQ]
  u16* sK = sQ + C * LQ;                   // [C][LQ]
  u16* sV = sK + C * LQ;                   // [C][LV]
  u16* sO = sV + C * LV;                   // [C][LV]: dO
  u16* sS = sO + C * LV;                   // [DK][LV]: the state at the chunk's start
  u16* sD = sS + DK * LV;                  // [DK][LV]: the gradient of its end state
  u16* sP = sD + DK * LV;                  // [C][LC]: dP (rows i, columns j)
  u16* sM = sP + C * LC;                   // [C][LC]: P
  float* s_A = reinterpret_cast<float*>(sM + C * LC);
  float* s_qdq = s_A + C;   // q_i . dq_i
  float* s_kdk = s_qdq + C;  // k_j . dk_j
  float* s_dl = s_kdk + C;   // per warp: its part of dL
  const LinChunk ch = linear_chunk(p, blockIdx.x, blockIdx.z);
  const int h = blockIdx.y, b = ch.b, t0 = ch.t0;
  const long long bh = static_cast<long long>(b) * p.heads + h;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, rows = ch.t_end - t0;
  auto at = [&](const void* base, const long long(&st)[3]) {
    return static_cast<const u16*>(base) + b * st[0] + h * st[1] + t0 * st[2];
  };
  const long long state_at = (bh * p.n_chunks + ch.chunk) * DK * DV;
  load_tile<C, DK, Cfg::kThreads>(sQ, at(p.q, p.q_stride), p.q_stride[2], rows);
  load_tile<C, DK, Cfg::kThreads>(sK, at(p.k, p.k_stride), p.k_stride[2], rows);
  load_tile<C, DV, Cfg::kThreads>(sV, at(p.v, p.v_stride), p.v_stride[2], rows);
  load_tile<C, DV, Cfg::kThreads>(sO, at(p.dout, p.do_stride), p.do_stride[2], rows);
  load_tile<DK, DV, Cfg::kThreads>(sS, static_cast<const u16*>(p.chunk_states) + state_at, DV, DK);
  load_tile<DK, DV, Cfg::kThreads>(sD, static_cast<const u16*>(p.dchunk_states) + state_at, DV, DK);
  linear_load_decays(p, bh, t0, ch.t_end, s_A);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  linear_scan(s_A);
  __syncthreads();

  const float last = s_A[C - 1];
  const int r0 = 16 * warp + lane / 4;  // this thread's rows r0, r0 + 8 of the warp's 16
  const float Ar0 = s_A[r0], Ar8 = s_A[r0 + 8];

  // ---- this warp's query rows: dP, dq, P ----
  {
    float s[C / 8][4];
    masked_scores<Cfg, DV>(p, s, lane_a<LV>(smem_addr(sO)) + 2 * 16 * warp * LV,
                           lane_nk<LV>(smem_addr(sV)), s_A, r0);
    scores_to_smem<Cfg>(sP, s, r0);
    float dq[DK / 8][4];
#pragma unroll
    for (int nt = 0; nt < DK / 8; ++nt) dq[nt][0] = dq[nt][1] = dq[nt][2] = dq[nt][3] = 0.f;
    const u32 o_at = lane_a<LV>(smem_addr(sO)) + 2 * 16 * warp * LV;
    mma_xyt<kBf16, DV, LV>(dq, o_at, lane_nk<LV>(smem_addr(sS)));  // dO S^T: S is S^T's [n][k]
    const float e0 = p.scale * lin_exp(Ar0), e8 = p.scale * lin_exp(Ar8);
#pragma unroll
    for (int nt = 0; nt < DK / 8; ++nt) dq[nt][0] *= e0, dq[nt][1] *= e0, dq[nt][2] *= e8, dq[nt][3] *= e8;
    add_pv<Cfg, LQ>(dq, s, lane_kn<LQ>(smem_addr(sK)));  // + dP K
    store_rows16<kBf16>(static_cast<u16*>(p.dq) + b * p.dq_stride[0] + h * p.dq_stride[1] +
                            t0 * p.dq_stride[2], p.dq_stride[2], dq, r0, rows);
    float dot[2];
    row_dots<kBf16, LQ>(dq, sQ, r0, dot);
    if (lane % 4 == 0) s_qdq[r0] = dot[0], s_qdq[r0 + 8] = dot[1];
    masked_scores<Cfg, DK>(p, s, lane_a<LQ>(smem_addr(sQ)) + 2 * 16 * warp * LQ,
                           lane_nk<LQ>(smem_addr(sK)), s_A, r0);
    scores_to_smem<Cfg>(sM, s, r0);
  }
  __syncthreads();

  // ---- this warp's key rows: dk, dv ----
  const float w0 = lin_exp(last - Ar0), w8 = lin_exp(last - Ar8);
  float dl = 0.f;  // this thread's part of sum_j w_j k_j^T dS v_j
  {
    float dk[DK / 8][4];
#pragma unroll
    for (int nt = 0; nt < DK / 8; ++nt) dk[nt][0] = dk[nt][1] = dk[nt][2] = dk[nt][3] = 0.f;
    const u32 v_at = lane_a<LV>(smem_addr(sV)) + 2 * 16 * warp * LV;
    mma_xyt<kBf16, DV, LV>(dk, v_at, lane_nk<LV>(smem_addr(sD)));  // V dS^T
#pragma unroll
    for (int nt = 0; nt < DK / 8; ++nt) dk[nt][0] *= w0, dk[nt][1] *= w0, dk[nt][2] *= w8, dk[nt][3] *= w8;
    float dot[2];
    row_dots<kBf16, LQ>(dk, sK, r0, dot);
    if (lane % 4 == 0) dl = dot[0] + dot[1];
    const u32 p_t = lane_nk<LC>(smem_addr(sP)) + 2 * 16 * warp;
    mma_xy<kBf16, C, LC, LQ, true>(dk, p_t, lane_kn<LQ>(smem_addr(sQ)));  // + dP^T Q
    store_rows16<kBf16>(static_cast<u16*>(p.dk) + b * p.dk_stride[0] + h * p.dk_stride[1] +
                            t0 * p.dk_stride[2], p.dk_stride[2], dk, r0, rows);
    row_dots<kBf16, LQ>(dk, sK, r0, dot);
    if (lane % 4 == 0) s_kdk[r0] = dot[0], s_kdk[r0 + 8] = dot[1];
  }
  {
    float dv[DV / 8][4];
#pragma unroll
    for (int nt = 0; nt < DV / 8; ++nt) dv[nt][0] = dv[nt][1] = dv[nt][2] = dv[nt][3] = 0.f;
    const u32 k_at = lane_a<LQ>(smem_addr(sK)) + 2 * 16 * warp * LQ;
    mma_xy<kBf16, DK, LQ, LV>(dv, k_at, lane_kn<LV>(smem_addr(sD)));  // K dS
#pragma unroll
    for (int nt = 0; nt < DV / 8; ++nt) dv[nt][0] *= w0, dv[nt][1] *= w0, dv[nt][2] *= w8, dv[nt][3] *= w8;
    const u32 m_t = lane_nk<LC>(smem_addr(sM)) + 2 * 16 * warp;
    mma_xy<kBf16, C, LC, LV, true>(dv, m_t, lane_kn<LV>(smem_addr(sO)));  // + P^T dO
    store_rows16<kBf16>(static_cast<u16*>(p.dv) + b * p.dv_stride[0] + h * p.dv_stride[1] +
                            t0 * p.dv_stride[2], p.dv_stride[2], dv, r0, rows);
  }

  // ---- the decays' gradient ----
  // dL: exp(A_last) <S, dS> (the tiles in shared memory) and the rows' w_j k_j^T dS v_j.
  float inner = 0.f;
  for (int e = threadIdx.x; e < DK * DV / 2; e += Cfg::kThreads) {
    const int r = e / (DV / 2), col = 2 * (e % (DV / 2));
    float s0, s1, d0, d1;
    unpack2<kBf16>(*reinterpret_cast<const u32*>(sS + r * LV + col), s0, s1);
    unpack2<kBf16>(*reinterpret_cast<const u32*>(sD + r * LV + col), d0, d1);
    inner = fmaf(s0, d0, fmaf(s1, d1, inner));
  }
  float part = fmaf(lin_exp(last), inner, dl);
  for (int o = 16; o > 0; o /= 2) part += shfl_xor(part, o);
  if (lane == 0) s_dl[warp] = part;
  __syncthreads();
  if (warp == 0) {  // da_t = sum_{i >= t} (q_i . dq_i - k_i . dk_i) + dL: a reverse scan
    const float dL = s_dl[0] + s_dl[1] + s_dl[2] + s_dl[3];
    const int t = 2 * (31 - lane);  // lane 0 holds the last pair
    const float x0 = s_qdq[t] - s_kdk[t], x1 = s_qdq[t + 1] - s_kdk[t + 1];
    float sum = x0 + x1;
    for (int o = 1; o < 32; o *= 2) {
      const float y = __shfl_sync(0xffffffffu, sum, lane - o);
      if (lane >= o) sum += y;
    }
    float after = __shfl_sync(0xffffffffu, sum, lane - 1);  // the pairs past this one
    if (lane == 0) after = 0.f;
    const float* a = p.a + bh * p.t_len;
    float* da = p.da + bh * p.t_len;
    const float g1 = after + x1 + dL, g0 = g1 + x0;
    if (t < rows) da[t0 + t] = a[t0 + t] < kLinMinLogDecay ? 0.f : g0;
    if (t + 1 < rows) da[t0 + t + 1] = a[t0 + t + 1] < kLinMinLogDecay ? 0.f : g1;
  }
}

// Per key channel, dk's (kKeys) or dq's terms of the pairs outside this warp's block, relative
// to its anchor token (kKeys: its last, E; else its first, F): acc (the warp's 16 rows,
// channels c0 .. c0 + N - 1, the C layout) += dP^T (Q o exp(A - A_E)) over the query blocks
// after the warp's, or dP (K o exp(A_F - A)) over the key blocks before it (each factor at
// most 1). dP from sP [C][C + 8] (rows queries), Y [C][DK + 8]: Q for dk, K for dq.
template <class Cfg, bool kKeys, int N>
AE_DEVICE void block_products(float (&acc)[N / 8][4], const u16* sP, const u16* sY,
                              const float* s_Ac, int c0) {
  constexpr int C = Cfg::kChunk, DK = Cfg::kDk, LQ = DK + 8, LC = C + 8;
  constexpr bool kBf16 = Cfg::kBf16;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int anchor = kKeys ? 16 * warp + 15 : 16 * warp;
  // dP^T's rows (kKeys: sP read transposed) or dP's, the warp's
  const u32 p_at = kKeys ? lane_nk<LC>(smem_addr(sP)) + 2 * 16 * warp
                         : lane_a<LC>(smem_addr(sP)) + 2 * 16 * warp * LC;
  const u32 y_kn = lane_kn<LQ>(smem_addr(sY));
  // (rolled: the blocks a warp takes depend on its index, and the grads pass's unrolled code
  // outgrew the instruction cache: ncu's "no instruction" stalls were half its samples)
#pragma unroll 1
  for (int B = kKeys ? warp + 1 : 0; B < (kKeys ? C / 16 : warp); ++B) {
    u32 a[4];
    if constexpr (kKeys) load_a_t<LC>(a, p_at, 16 * B, 0);
    else load_a<LC>(a, p_at, 0, 16 * B);
#pragma unroll
    for (int np = 0; np < N / 16; ++np) {
      u32 r[4];
      load_b_kn<LQ>(r, y_kn, 16 * B, c0 + np * 16);
      const int c = c0 + np * 16 + lane / 4;
      decay_b_kn<DK, kBf16>(r, s_Ac, 16 * B + 2 * (lane % 4), c, s_Ac[anchor * DK + c],
                            s_Ac[anchor * DK + c + 8], kKeys ? 1.f : -1.f);
      mma_16816<kBf16>(acc[2 * np], a, r[0], r[1]);
      mma_16816<kBf16>(acc[2 * np + 1], a, r[2], r[3]);
    }
  }
}

// Then acc (block_products' and the state's terms, relative to the anchor) is rebased to each
// row's own token, and the pairs within the warp's block added term by term: for row r, the
// sum over the block's tokens t up to r (from r, kKeys) of dP (r, t) y_tc exp(A_ic - A_jc),
// (i, j) the (query, key) of (r, t). A thread's rows r0 and r0 + 8 reach the first 8 and all
// 16 tokens (the last 16 and 8, kKeys): 8 tokens that both rows may reach, then 8 that only
// one does, each lane skipping those it lacks. The token loops are rolled (code size, as in
// block_products), a token's dP and decays read once for all of the row's channels.
// (In fp32, not on the tensor cores as the forward's own blocks: these pairs enter both q . dq
// and k . dk, which cancel in da; rounded to bf16 apart, they left da 5% off at steady decays,
// the emulator's gla_steady case.)
template <class Cfg, bool kKeys, int N>
AE_DEVICE void block_pairs(float (&acc)[N / 8][4], const u16* sP, const u16* sY, const float* s_Ac,
                           int c0) {
  constexpr int DK = Cfg::kDk, LQ = DK + 8, LC = Cfg::kChunk + 8;
  constexpr bool kBf16 = Cfg::kBf16;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int anchor = kKeys ? 16 * warp + 15 : 16 * warp;
  const int cl = c0 + 2 * (lane % 4);  // this thread's channels cl + 8 nt, + 1
  auto Ac2 = [&](int t, int c) { return *reinterpret_cast<const float2*>(s_Ac + t * DK + c); };
#pragma unroll
  for (int nt = 0; nt < N / 8; ++nt) {
    const float2 an = Ac2(anchor, cl + nt * 8);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const float2 ar = Ac2(16 * warp + lane / 4 + 8 * half, cl + nt * 8);
      acc[nt][2 * half] *= lin_exp(kKeys ? an.x - ar.x : ar.x - an.x);
      acc[nt][2 * half + 1] *= lin_exp(kKeys ? an.y - ar.y : ar.y - an.y);
    }
  }
  // half h's row r and token t: dP (r, t) y_t exp(+-(A_t - A_r)) into acc[.][2h, 2h + 1]
  auto add = [&](int half, int t) {
    const int r = 16 * warp + lane / 4 + 8 * half;
    if (kKeys ? t < r : t > r) return;
    const float dp = to_float<kBf16>(kKeys ? sP[t * LC + r] : sP[r * LC + t]);
#pragma unroll
    for (int nt = 0; nt < N / 8; ++nt) {
      const int c = cl + nt * 8;
      float y0, y1;
      unpack2<kBf16>(*reinterpret_cast<const u32*>(sY + t * LQ + c), y0, y1);
      const float2 at = Ac2(t, c), ar = Ac2(r, c);
      acc[nt][2 * half] = fmaf(dp * y0, lin_exp(kKeys ? at.x - ar.x : ar.x - at.x), acc[nt][2 * half]);
      acc[nt][2 * half + 1] = fmaf(dp * y1, lin_exp(kKeys ? at.y - ar.y : ar.y - at.y), acc[nt][2 * half + 1]);
    }
  };
  // both rows: the keys' last 8 tokens, the queries' first 8; one row: the other 8 (the keys'
  // first 8 only row r0's, the queries' last 8 only r0 + 8's)
  const int both = 16 * warp + (kKeys ? 8 : 0), one = 16 * warp + (kKeys ? 0 : 8);
#pragma unroll 1
  for (int k = 0; k < 8; ++k) {
    add(0, both + k);
    add(1, both + k);
  }
#pragma unroll 1
  for (int k = 0; k < 8; ++k) add(kKeys ? 0 : 1, one + k);
}

// The gradients' pass per key channel (GLA): see the header. Per warp, 16 tokens as keys (dv,
// dk) and as queries (dq); blocks of 16 tokens on the tensor cores with both factors relative
// to an anchor token of the warp's block, its first for the queries, its last for the keys
// (each factor at most 1; linear_fwd.h channel_scores, which for dv's P^T also takes the
// block's own pairs where its decays span little), dk's and dq's own pairs term by term.
// One state tile: dS (dv, dk), then S, loaded while dq's products within the chunk run. da's
// terms: -k o dk held in registers until V is done with, then in its place, q o dq added there;
// a thread per channel sums them from the chunk's end.
template <class Cfg>
AE_DEVICE void linear_grads_channels(const LinearParams& p) {
  constexpr int C = Cfg::kChunk, DK = Cfg::kDk, DV = Cfg::kDv, L = C - 1;
  constexpr int LQ = DK + 8, LV = DV + 8, LC = C + 8;
  constexpr bool kBf16 = Cfg::kBf16;
  static_assert(DK <= Cfg::kThreads, "a thread per channel");
  extern __shared__ __align__(16) char smem[];
  u16* sQ = reinterpret_cast<u16*>(smem);  // [C][LQ]
  u16* sK = sQ + C * LQ;                   // [C][LQ]
  u16* sO = sK + C * LQ;                   // [C][LV]: dO
  u16* sD = sO + C * LV;                   // [DK][LV]: dS, then S
  u16* sP = sD + DK * LV;                  // [C][LC]: dP
  float* s_Ac = reinterpret_cast<float*>(sP + C * LC);  // [C][DK]
  float* s_dl = s_Ac + C * DK;  // [DK]: exp(A_L) <S, dS> per channel
  float* s_dlw = s_dl + DK;     // [4][DK]: each warp's keys' part of the rest of dL
  u16* sV = reinterpret_cast<u16*>(s_dlw + 4 * DK);  // [C][LV]
  float* s_x = reinterpret_cast<float*>(sV);  // [C][DK] once dk is done: da's terms
  // s_x's (t, c), its groups of 8 columns swizzled by t % 4: the warps' float2 stores of their
  // rows (8 rows x 8 columns, half a warp 4 x 8), and a row's reads, are conflict-free.
  static_assert(DK % 32 == 0, "x_at's swizzle stays inside a row of a multiple of 32 columns");
  auto x_at = [](int t, int c) { return t * DK + (c ^ (8 * (t % 4))); };
  const LinChunk ch = linear_chunk(p, blockIdx.x, blockIdx.z);
  const int h = blockIdx.y, b = ch.b, t0 = ch.t0;
  const long long bh = static_cast<long long>(b) * p.heads + h;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, rows = ch.t_end - t0;
  auto at = [&](const void* base, const long long(&st)[3]) {
    return static_cast<const u16*>(base) + b * st[0] + h * st[1] + t0 * st[2];
  };
  const long long state_at = (bh * p.n_chunks + ch.chunk) * DK * DV;
  load_tile<C, DK, Cfg::kThreads>(sQ, at(p.q, p.q_stride), p.q_stride[2], rows);
  load_tile<C, DK, Cfg::kThreads>(sK, at(p.k, p.k_stride), p.k_stride[2], rows);
  load_tile<C, DV, Cfg::kThreads>(sV, at(p.v, p.v_stride), p.v_stride[2], rows);
  load_tile<C, DV, Cfg::kThreads>(sO, at(p.dout, p.do_stride), p.do_stride[2], rows);
  load_tile<DK, DV, Cfg::kThreads>(sD, static_cast<const u16*>(p.dchunk_states) + state_at, DV, DK);
  linear_load_decays_channels<DK, Cfg::kThreads>(p, bh, t0, ch.t_end, 0, s_Ac);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  linear_scan_channels<DK>(s_Ac);
  __syncthreads();

  const int r0 = 16 * warp + lane / 4;  // this thread's rows r0, r0 + 8 of the warp's 16
  auto Ac = [&](int t, int c) { return s_Ac[t * DK + c]; };
  {  // dP for this warp's queries; per channel exp(A_L) <S, dS> (S from global memory)
    float s[C / 8][4];
    masked_scores<Cfg, DV, false>(p, s, lane_a<LV>(smem_addr(sO)) + 2 * 16 * warp * LV,
                                  lane_nk<LV>(smem_addr(sV)), nullptr, r0);
    scores_to_smem<Cfg>(sP, s, r0);
  }
  if (threadIdx.x < DK) {
    const int c = threadIdx.x;
    const u16* g = static_cast<const u16*>(p.chunk_states) + state_at + c * DV;
    float sum = 0.f;
#pragma unroll 16
    for (int v = 0; v < DV; v += 2) {
      float s0, s1, d0, d1;
      unpack2<kBf16>(*reinterpret_cast<const u32*>(g + v), s0, s1);
      unpack2<kBf16>(*reinterpret_cast<const u32*>(sD + c * LV + v), d0, d1);
      sum = fmaf(s0, d0, fmaf(s1, d1, sum));
    }
    s_dl[c] = lin_exp(Ac(L, c)) * sum;
  }
  __syncthreads();

  {  // ---- dv: (K o exp(A_L - A)) dS + scale P^T dO, this warp's keys ----
    float dv[DV / 8][4];
#pragma unroll
    for (int nt = 0; nt < DV / 8; ++nt) dv[nt][0] = dv[nt][1] = dv[nt][2] = dv[nt][3] = 0.f;
    const u32 k_at = lane_a<LQ>(smem_addr(sK)) + 2 * 16 * warp * LQ;
    mma_xy<kBf16, DK, LQ, LV>(dv, k_at, lane_kn<LV>(smem_addr(sD)), [&](u32 (&a)[4], int k) {
      const int c = k + 2 * (lane % 4);
      const float last[4] = {Ac(L, c), Ac(L, c + 1), Ac(L, c + 8), Ac(L, c + 9)};
      decay_a<DK, kBf16>(a, s_Ac, r0, c, last, -1.f);
    });
    float s[C / 8][4];
    channel_scores<Cfg, true>(s, sK, sQ, s_Ac);  // P^T: the keys' rows
#pragma unroll
    for (int nt = 0; nt < C / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nt][e] *= p.scale;
    add_pv<Cfg>(dv, s, lane_kn<LV>(smem_addr(sO)));
    store_rows16<kBf16>(static_cast<u16*>(p.dv) + b * p.dv_stride[0] + h * p.dv_stride[1] +
                            t0 * p.dv_stride[2], p.dv_stride[2], dv, r0, rows);
  }

  // dk and dq 64 channels at a time (CG): at D_k 128 all of them at once spilled.
  constexpr int CG = 64;
  float x[DK / 8][4];  // da's terms of this thread's elements, -k_ic dk_ic (then + q_ic dq_ic)
  // ---- dk, this warp's keys: relative to its last token E ----
  const int E = 16 * warp + 15;
  const u32 v_at = lane_a<LV>(smem_addr(sV)) + 2 * 16 * warp * LV, d_nk = lane_nk<LV>(smem_addr(sD));
#pragma unroll
  for (int g = 0; g < DK / CG; ++g) {
    float dk[CG / 8][4];
#pragma unroll
    for (int nt = 0; nt < CG / 8; ++nt) dk[nt][0] = dk[nt][1] = dk[nt][2] = dk[nt][3] = 0.f;
    mma_xyt<kBf16, DV, LV>(dk, v_at, d_nk, CG * g);  // V dS^T
    // its dL part, sum_j k_jc exp(A_Lc - A_jc) (V_j dS^T)_c over the warp's keys; then the
    // state's term relative to E
#pragma unroll
    for (int nt = 0; nt < CG / 8; ++nt)
#pragma unroll
      for (int col = 0; col < 2; ++col) {
        const int c = CG * g + nt * 8 + 2 * (lane % 4) + col;
        float part = 0.f;
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int j = r0 + 8 * half;
          float& d = dk[nt][2 * half + col];
          part = fmaf(to_float<kBf16>(sK[j * LQ + c]) * d, lin_exp(Ac(L, c) - Ac(j, c)), part);
          d *= lin_exp(Ac(L, c) - Ac(E, c));
        }
        part += shfl_xor(part, 4);
        part += shfl_xor(part, 8);
        part += shfl_xor(part, 16);
        if (lane < 4) s_dlw[warp * DK + c] = part;
      }
    block_products<Cfg, true, CG>(dk, sP, sQ, s_Ac, CG * g);
    block_pairs<Cfg, true, CG>(dk, sP, sQ, s_Ac, CG * g);
    store_rows16<kBf16>(static_cast<u16*>(p.dk) + b * p.dk_stride[0] + h * p.dk_stride[1] +
                            t0 * p.dk_stride[2] + CG * g, p.dk_stride[2], dk, r0, rows);
#pragma unroll
    for (int nt = 0; nt < CG / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = r0 + 8 * (e >> 1), c = CG * g + nt * 8 + 2 * (lane % 4) + (e & 1);
        x[CG / 8 * g + nt][e] = -to_float<kBf16>(sK[j * LQ + c]) * dk[nt][e];
      }
  }
  __syncthreads();  // every warp is done with dS and V
  load_tile<DK, DV, Cfg::kThreads>(sD, static_cast<const u16*>(p.chunk_states) + state_at, DV, DK);
  cp_async_commit();
#pragma unroll
  for (int nt = 0; nt < DK / 8; ++nt)
#pragma unroll
    for (int half = 0; half < 2; ++half)
      *reinterpret_cast<float2*>(s_x + x_at(r0 + 8 * half, nt * 8 + 2 * (lane % 4))) =
          make_float2(x[nt][2 * half], x[nt][2 * half + 1]);

  // ---- dq, this warp's queries: relative to its first token F ----
  const int F = 16 * warp;
  const u32 o_at = lane_a<LV>(smem_addr(sO)) + 2 * 16 * warp * LV, st_at = lane_nk<LV>(smem_addr(sD));
#pragma unroll
  for (int g = 0; g < DK / CG; ++g) {
    float dq[CG / 8][4];
#pragma unroll
    for (int nt = 0; nt < CG / 8; ++nt) dq[nt][0] = dq[nt][1] = dq[nt][2] = dq[nt][3] = 0.f;
    block_products<Cfg, false, CG>(dq, sP, sK, s_Ac, CG * g);
    if (g == 0) {
      cp_async_wait<0>();
      __syncthreads();
    }
    // + dO (S o scale exp(A_F))^T: S [dk][dv] is S^T's [n][k], the factor per n (channel)
    mma_xyt<kBf16, DV, LV>(dq, o_at, st_at, CG * g, [&](u32 (&r)[4], int n) {
      const int c = n + lane / 4;
      const float f0 = p.scale * lin_exp(Ac(F, c)), f8 = p.scale * lin_exp(Ac(F, c + 8));
      r[0] = scale2<kBf16>(r[0], f0, f0), r[1] = scale2<kBf16>(r[1], f0, f0);
      r[2] = scale2<kBf16>(r[2], f8, f8), r[3] = scale2<kBf16>(r[3], f8, f8);
    });
    block_pairs<Cfg, false, CG>(dq, sP, sK, s_Ac, CG * g);
    store_rows16<kBf16>(static_cast<u16*>(p.dq) + b * p.dq_stride[0] + h * p.dq_stride[1] +
                            t0 * p.dq_stride[2] + CG * g, p.dq_stride[2], dq, r0, rows);
#pragma unroll
    for (int nt = 0; nt < CG / 8; ++nt)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int i = r0 + 8 * half, c = CG * g + nt * 8 + 2 * (lane % 4);
        float q0, q1;
        unpack2<kBf16>(*reinterpret_cast<const u32*>(sQ + i * LQ + c), q0, q1);
        float2& xi = *reinterpret_cast<float2*>(s_x + x_at(i, c));
        xi.x += q0 * dq[nt][2 * half];
        xi.y += q1 * dq[nt][2 * half + 1];
      }
  }
  __syncthreads();
  if (threadIdx.x < DK) {  // da_tc = sum_{i >= t} x_ic + dL_c, from the chunk's end
    const int c = threadIdx.x;
    float run = s_dl[c] + s_dlw[c] + s_dlw[DK + c] + s_dlw[2 * DK + c] + s_dlw[3 * DK + c];
    const float* a = p.a + (bh * p.t_len + t0) * DK + c;
    float* da = p.da + (bh * p.t_len + t0) * DK + c;
    constexpr int kBatch = 32;  // the decays' loads issued at once (da's stores could alias them)
#pragma unroll
    for (int tb = C - kBatch; tb >= 0; tb -= kBatch) {
      float raw[kBatch];
#pragma unroll
      for (int k = 0; k < kBatch; ++k) raw[k] = tb + k < rows ? a[(tb + k) * DK] : 0.f;
#pragma unroll
      for (int k = kBatch - 1; k >= 0; --k) {
        const int t = tb + k;
        run += s_x[x_at(t, c)];
        if (t < rows) da[t * DK] = raw[k] < kLinMinLogDecay ? 0.f : run;
      }
    }
  }
}

template <class Cfg>
AE_DEVICE void linear_grads(const LinearParams& p) {
  if constexpr (Cfg::kPerChannel) linear_grads_channels<Cfg>(p);
  else linear_grads_scalar<Cfg>(p);
}

}  // namespace ae::sm80
