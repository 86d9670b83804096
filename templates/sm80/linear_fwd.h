// Linear attention's chunked forward on the mma.sync path (sm_80 and up), scalar decays
// (retention, simple GLA, Mamba2's SSD): LinearParams (common/params.h) over chunks of
// kLinChunk tokens, in two kernels.
//   linear_state: per (batch, head) and 64 x kStateCols tile of the state, the chunks in order: the
//     state at each chunk's start stored (q's dtype) for the output pass, then
//     S <- exp(A_last) S + K^T diag(exp(A_last - A_j)) V (fp32 in registers), the last one
//     stored as the final state (fp32). K and V of the next chunk load while one is summed.
//   linear_out: per chunk (independent): O = diag(exp(A_i)) Q S_start + (Q K^T o D) V, D_ij =
//     exp(A_i - A_j) for j <= i, else 0; times the scale.
// A_i: the chunk's inclusive prefix sums of the log-decays, each clamped below at
// kLinMinLogDecay (exp of it is 0 next to the terms it multiplies), so that a chunk's sums
// stay finite and their differences are never inf - inf (a gate at 0, log-decay -inf).
// Per key channel (GLA, Cfg::kPerChannel): A_i is a row of Dk prefix sums, the decays scale
// K's and Q's elements (A operands), and within a chunk the scores are sums over channels of
// q_id k_jd exp(A_id - A_jd): for 16-token blocks J before the queries' block I, the product
// of q_id exp(A_id - A_Id) and k_jd exp(A_Id - A_jd) (I0: I's first token; both factors at
// most 1), on the tensor cores; the diagonal blocks the same way where their decays span at
// most kLinDiagRange, else term by term.
#pragma once

#include "common/params.h"
#include "nvidia/mma.h"
#include "sm80/shapes.h"
#include "sm80/tile_io.h"

namespace ae::sm80 {

constexpr float kLinMinLogDecay = -80.f;

// e^x on the transcendental unit (ex2.approx.ftz): a result below 2^-126 flushes to 0, which
// the terms it scales never notice; __expf's fix-up for those cost three more instructions.
AE_DEVICE float lin_exp(float x) { return fast_exp2(x * kLog2e); }

// STATE_COLS: the state passes' value columns per CTA (kLinTile, or half of it: twice the CTAs
// and half the tensor-core work per chunk on each one's sequential path).
template <int D_K_, int D_V_, bool BF16_, bool PER_CHANNEL_ = false, int STATE_COLS_ = kLinTile>
struct LinearConfig {
  static constexpr int kDk = D_K_, kDv = D_V_, kChunk = kLinChunk, kThreads = kLinThreads;
  static constexpr int kStateCols = STATE_COLS_;
  static_assert(kStateCols == kLinTile || kStateCols == kLinTile / 2, "state columns 64 or 32");
  static constexpr bool kBf16 = BF16_, kPerChannel = PER_CHANNEL_;
  static_assert(kDk % kLinTile == 0 && kDv % kLinTile == 0 && kDk <= 128 && kDv <= 128,
                "head dims 64 or 128");
  static_assert(kThreads == 128 && kChunk == 64 && kLinTile == 64, "4 warps of 16 rows");
  static constexpr int kStateSmem = linear_state_smem_bytes(kPerChannel, kStateCols),
                       kOutSmem = linear_out_smem_bytes(kDk, kDv, kPerChannel),
                       kGradsSmem = linear_grads_smem_bytes(kDk, kDv, kPerChannel);
};

// The chunk's prefix sums of the log-decays, in two steps: the loads (cp.async, in the
// caller's group with its tiles, so that their latency is not paid on its own) and, past the
// wait and a barrier, the sums in place (then another barrier before they are read). Tokens at
// or past the sequence's end t_end are zero-filled and add 0.
// One decay per token: s_A [kLinChunk], a thread per token.
AE_DEVICE void linear_load_decays(const LinearParams& p, long long bh, int t0, int t_end, float* s_A) {
  const int i = threadIdx.x;
  if (i >= kLinChunk) return;
  const float* a = p.a + bh * p.t_len;
  cp_async_4(s_A + i, t0 + i < t_end ? a + t0 + i : a, t0 + i < t_end);
}
// Per key channel: channels c0 .. c0 + N - 1 into s_Ac [kLinChunk][N], 16 bytes a copy (the
// host passes p.a 16-byte aligned; rows are d_k 64 / 128 floats, c0 a multiple of 4).
template <int N, int THREADS>
AE_DEVICE void linear_load_decays_channels(const LinearParams& p, long long bh, int t0, int t_end,
                                           int c0, float* s_Ac) {
  constexpr int kPieces = N / 4;  // 16-byte pieces per token
  const float* a = p.a + (bh * p.t_len + t0) * p.d_k + c0;
#pragma unroll 4
  for (int c = threadIdx.x; c < kLinChunk * kPieces; c += THREADS) {
    const int t = c / kPieces, col = (c % kPieces) * 4;
    const bool ok = t0 + t < t_end;
    cp_async_16(s_Ac + t * N + col, a + (ok ? static_cast<long long>(t) * p.d_k : 0) + col, ok);
  }
}
// The sums in place, each decay clamped below at kLinMinLogDecay: per token by warp 0 (two
// tokens per lane, a shuffle scan of the pairs)...
AE_DEVICE void linear_scan(float* s_A) {
  if (threadIdx.x >= 32) return;
  const int lane = threadIdx.x;
  const float x0 = fmaxf(s_A[2 * lane], kLinMinLogDecay), x1 = fmaxf(s_A[2 * lane + 1], kLinMinLogDecay);
  float sum = x0 + x1;
  for (int o = 1; o < 32; o *= 2) {
    const float y = __shfl_sync(0xffffffffu, sum, lane - o);
    if (lane >= o) sum += y;
  }
  float before = __shfl_sync(0xffffffffu, sum, lane - 1);
  if (lane == 0) before = 0.f;
  s_A[2 * lane] = before + x0;
  s_A[2 * lane + 1] = before + x0 + x1;
}
// ... and per key channel by a thread per channel, 16 tokens' loads issued at once.
template <int N>
AE_DEVICE void linear_scan_channels(float* s_Ac) {
  const int d = threadIdx.x;
  if (d >= N) return;
  float sum = 0.f;
#pragma unroll
  for (int t0 = 0; t0 < kLinChunk; t0 += 16) {
    float x[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) x[i] = s_Ac[(t0 + i) * N + d];
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      sum += fmaxf(x[i], kLinMinLogDecay);
      s_Ac[(t0 + i) * N + d] = sum;
    }
  }
}

// The sequence a state pass carries (grid z): a batch of t_len tokens, or packed sequence z
// (LinearParams::cu_seqlens): its tokens [t_begin, t_end), its first chunk among the chunk
// states' and its chunks.
struct LinSeq {
  int t_begin, t_end, chunk0, n;
};
AE_DEVICE LinSeq linear_seq(const LinearParams& p, int z) {
  if (!p.cu_seqlens) return {0, p.t_len, 0, p.n_chunks};
  const int c0 = p.chunk_map[z];
  return {p.cu_seqlens[z], p.cu_seqlens[z + 1], c0, p.chunk_map[z + 1] - c0};
}
// The chunk a per-chunk pass takes (grid x, z): its first token, its sequence's end, its index
// among the chunk states, and the batch whose tensors hold it (packed: 0).
struct LinChunk {
  int t0, t_end, chunk, b;
};
AE_DEVICE LinChunk linear_chunk(const LinearParams& p, int x, int z) {
  if (!p.cu_seqlens) return {x * kLinChunk, p.t_len, x, z};
  const int seq = p.chunk_map[p.n_seqs + 1 + x];
  return {p.chunk_map[p.n_seqs + 1 + p.n_chunks + x], p.cu_seqlens[seq + 1], x, 0};
}

// w's two 16-bit values times s0 and s1.
template <bool kBf16>
AE_DEVICE u32 scale2(u32 w, float s0, float s1) {
  float lo, hi;
  unpack2<kBf16>(w, lo, hi);
  return pack2<kBf16>(lo * s0, hi * s1);
}

// Per key channel: 16-bit fragments times exp(sign (A_tc - base)), A_tc the prefix sums s_Ac
// [kLinChunk][DK] at token t, channel c, base an anchor token's at the same channel (or 0): the
// sign puts the later token first, so that each factor is at most 1.
// An A operand (rows: tokens t, t + 8; k: channels c, c + 1, c + 8, c + 9, as base's four)...
template <int DK, bool kBf16>
AE_DEVICE void decay_a(u32 (&a)[4], const float* s_Ac, int t, int c, const float (&base)[4], float sign) {
  auto f = [&](int tt, int cc, float b) { return lin_exp(sign * (s_Ac[tt * DK + cc] - b)); };
  a[0] = scale2<kBf16>(a[0], f(t, c, base[0]), f(t, c + 1, base[1]));
  a[1] = scale2<kBf16>(a[1], f(t + 8, c, base[0]), f(t + 8, c + 1, base[1]));
  a[2] = scale2<kBf16>(a[2], f(t, c + 8, base[2]), f(t, c + 9, base[3]));
  a[3] = scale2<kBf16>(a[3], f(t + 8, c + 8, base[2]), f(t + 8, c + 9, base[3]));
}
// ... B operands of a [token][channel] tile read as [n][k] (load_b_nk: tokens t, t + 8)...
template <int DK, bool kBf16>
AE_DEVICE void decay_b_nk(u32 (&r)[4], const float* s_Ac, int t, int c, const float (&base)[4], float sign) {
  auto f = [&](int tt, int cc, float b) { return lin_exp(sign * (s_Ac[tt * DK + cc] - b)); };
  r[0] = scale2<kBf16>(r[0], f(t, c, base[0]), f(t, c + 1, base[1]));
  r[1] = scale2<kBf16>(r[1], f(t, c + 8, base[2]), f(t, c + 9, base[3]));
  r[2] = scale2<kBf16>(r[2], f(t + 8, c, base[0]), f(t + 8, c + 1, base[1]));
  r[3] = scale2<kBf16>(r[3], f(t + 8, c + 8, base[2]), f(t + 8, c + 9, base[3]));
}
// ... and read as [k][n] (load_b_kn: tokens t, t + 1, t + 8, t + 9; channels c, c + 8, base b0, b8).
template <int DK, bool kBf16>
AE_DEVICE void decay_b_kn(u32 (&r)[4], const float* s_Ac, int t, int c, float b0, float b8, float sign) {
  auto f = [&](int tt, int cc, float b) { return lin_exp(sign * (s_Ac[tt * DK + cc] - b)); };
  r[0] = scale2<kBf16>(r[0], f(t, c, b0), f(t + 1, c, b0));
  r[1] = scale2<kBf16>(r[1], f(t + 8, c, b0), f(t + 9, c, b0));
  r[2] = scale2<kBf16>(r[2], f(t, c + 8, b8), f(t + 1, c + 8, b8));
  r[3] = scale2<kBf16>(r[3], f(t + 8, c + 8, b8), f(t + 9, c + 8, b8));
}

// The state pass, and (kBackward) the backward's reverse pass over the state's gradient, which
// has the same shape: a 64 x N tile (Cfg::kStateCols) of an fp32 state in registers carried over the chunks, each
// chunk's value stored (q's dtype) before the chunk updates it,
//   forward:  S <- exp(A_last) S + K^T diag(exp(A_last - A_j)) V, chunks first to last, from
//             state0 (or 0) into chunk_states, the last into state;
//   backward: dS <- exp(A_last) dS + Q^T diag(scale exp(A_i)) dO, chunks last to first, from
//             dstate (or 0) into dchunk_states, the last (the initial state's) into dstate0.
// X (K or Q) and Y (V or dO) of the next chunk load while one is summed.
template <class Cfg, bool kBackward>
AE_DEVICE void carry_state(const LinearParams& p) {
  constexpr int C = Cfg::kChunk, T = kLinTile, LD = T + 8, N = Cfg::kStateCols, LY = N + 8;
  constexpr bool kBf16 = Cfg::kBf16;
  extern __shared__ __align__(16) char smem[];
  u16* sX = reinterpret_cast<u16*>(smem);  // [2 buffers][C][LD]: X's dk0.. columns
  u16* sY = sX + 2 * C * LD;               // [2][C][LY]: Y's dv0.. columns
  float* s_A = reinterpret_cast<float*>(sY + 2 * C * LY);
  float* s_Ac = s_A + 2 * C;  // per key channel: [2 buffers][C][T], this tile's channels
  constexpr bool kPc = Cfg::kPerChannel;
  // [T][LY]: the state tile on its way out (16-bit): 16-byte stores of whole rows, where the
  // fragments' own 4-byte stores half-filled their L2 sectors (the pass was L2-bound)
  u16* sSt = reinterpret_cast<u16*>(s_Ac + (kPc ? 2 * C * T : 0));
  const int tiles_v = Cfg::kDv / N;
  const int dk0 = (blockIdx.x / tiles_v) * T, dv0 = (blockIdx.x % tiles_v) * N;
  const int h = blockIdx.y, z = blockIdx.z;
  const LinSeq sq = linear_seq(p, z);
  const int b = p.cu_seqlens ? 0 : z;  // (the tensors' batch; packed sequences share one)
  const long long bh = static_cast<long long>(b) * p.heads + h;       // tokens' rows, chunk states
  const long long sh = static_cast<long long>(z) * p.heads + h;       // the sequence's states
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const long long(&xs)[3] = kBackward ? p.q_stride : p.k_stride;
  const long long(&ys)[3] = kBackward ? p.do_stride : p.v_stride;
  const u16* gx = static_cast<const u16*>(kBackward ? p.q : p.k) + b * xs[0] + h * xs[1] + dk0;
  const u16* gy = static_cast<const u16*>(kBackward ? p.dout : p.v) + b * ys[0] + h * ys[1] + dv0;
  const float* init = kBackward ? p.dstate : p.state0;
  float* last_out = kBackward ? p.dstate0 : p.state;
  u16* out = static_cast<u16*>(kBackward ? p.dchunk_states : p.chunk_states);
  const int n = sq.n;
  auto chunk = [&](int i) { return kBackward ? n - 1 - i : i; };  // the i-th chunk visited
  auto load = [&](int i) {
    const int t0 = sq.t_begin + chunk(i) * C, rows = sq.t_end - t0;
    load_tile<C, T, Cfg::kThreads>(sX + (i % 2) * C * LD, gx + t0 * xs[2], xs[2], rows);
    load_tile<C, N, Cfg::kThreads>(sY + (i % 2) * C * LY, gy + t0 * ys[2], ys[2], rows);
    if constexpr (kPc)
      linear_load_decays_channels<T, Cfg::kThreads>(p, bh, t0, sq.t_end, dk0, s_Ac + (i % 2) * C * T);
    else
      linear_load_decays(p, bh, t0, sq.t_end, s_A + (i % 2) * C);
  };
  // This warp's 16 rows of the tile (keys' channels), all N columns: the C layout, rows
  // lane / 4 and + 8, columns 8 nt + 2 (lane % 4) + {0, 1}.
  float s[N / 8][4];
  const int r0 = 16 * warp + lane / 4;
#pragma unroll
  for (int nt = 0; nt < N / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = dk0 + r0 + 8 * (e >> 1), col = dv0 + nt * 8 + 2 * (lane % 4) + (e & 1);
      s[nt][e] = init ? init[(sh * Cfg::kDk + r) * Cfg::kDv + col] : 0.f;
    }
  const u32 x_at = lane_nk<LD>(smem_addr(sX)), y_at = lane_kn<LY>(smem_addr(sY));
  if (n > 0) load(0);
  cp_async_commit();
  for (int i = 0; i < n; ++i) {
    const int c = chunk(i);
    u16* at = out + (bh * p.n_chunks + sq.chunk0 + c) * Cfg::kDk * Cfg::kDv;  // before this chunk
#pragma unroll
    for (int nt = 0; nt < N / 8; ++nt)
#pragma unroll
      for (int half = 0; half < 2; ++half)
        *reinterpret_cast<u32*>(sSt + (r0 + 8 * half) * LY + nt * 8 + 2 * (lane % 4)) =
            pack2<kBf16>(s[nt][2 * half], s[nt][2 * half + 1]);
    if (i + 1 < n) load(i + 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
#pragma unroll
    for (int e = threadIdx.x; e < T * N / 8; e += Cfg::kThreads) {  // (read before the next barrier)
      const int r = e / (N / 8), col = (e % (N / 8)) * 8;
      *reinterpret_cast<uint4*>(at + (dk0 + r) * Cfg::kDv + dv0 + col) =
          *reinterpret_cast<const uint4*>(sSt + r * LY + col);
    }
    if constexpr (kPc) linear_scan_channels<T>(s_Ac + (i % 2) * C * T);
    else linear_scan(s_A + (i % 2) * C);
    __syncthreads();
    const float* A = s_A + (i % 2) * C;
    const float* Acb = s_Ac + (i % 2) * C * T;  // (per key channel)
    const float last = A[C - 1];
    if constexpr (kPc) {  // this thread's rows (channels) decay by their own exp(A_last)
      const float k0 = lin_exp(Acb[(C - 1) * T + r0]), k8 = lin_exp(Acb[(C - 1) * T + r0 + 8]);
#pragma unroll
      for (int nt = 0; nt < N / 8; ++nt) s[nt][0] *= k0, s[nt][1] *= k0, s[nt][2] *= k8, s[nt][3] *= k8;
    } else {
      const float keep = lin_exp(last);
#pragma unroll
      for (int nt = 0; nt < N / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[nt][e] *= keep;
    }
    // The weight of token t's Y row: exp(A_last - A_t), or scale exp(A_t); per key channel d
    // (of the tile) the same of A_td, on X's elements.
    auto weight = [&](int t) { return kBackward ? p.scale * lin_exp(A[t]) : lin_exp(last - A[t]); };
    auto weight_c = [&](int t, int d) {
      const float at = Acb[t * T + d];
      return kBackward ? p.scale * lin_exp(at) : lin_exp(Acb[(C - 1) * T + d] - at);
    };
    const u32 xb = x_at + (i % 2) * C * LD * 2, yb = y_at + (i % 2) * C * LY * 2;
#pragma unroll
    for (int kk = 0; kk < C / 16; ++kk) {
      u32 a[4];
      load_a_t<LD>(a, xb, kk * 16, 16 * warp);  // X^T: this warp's channels x 16 tokens
      // The tokens' weights on X^T's fragment (once per warp and 16 tokens, not per column
      // block of Y): a[0] (channel r0, tokens t, t + 1), a[1] r0 + 8, a[2], a[3] tokens + 8.
      const int t = kk * 16 + 2 * (lane % 4);
      if constexpr (kPc) {
        a[0] = scale2<kBf16>(a[0], weight_c(t, r0), weight_c(t + 1, r0));
        a[1] = scale2<kBf16>(a[1], weight_c(t, r0 + 8), weight_c(t + 1, r0 + 8));
        a[2] = scale2<kBf16>(a[2], weight_c(t + 8, r0), weight_c(t + 9, r0));
        a[3] = scale2<kBf16>(a[3], weight_c(t + 8, r0 + 8), weight_c(t + 9, r0 + 8));
      } else {
        const float w0 = weight(t), w1 = weight(t + 1), w8 = weight(t + 8), w9 = weight(t + 9);
        a[0] = scale2<kBf16>(a[0], w0, w1), a[1] = scale2<kBf16>(a[1], w0, w1);
        a[2] = scale2<kBf16>(a[2], w8, w9), a[3] = scale2<kBf16>(a[3], w8, w9);
      }
#pragma unroll
      for (int np = 0; np < N / 16; ++np) {
        u32 r[4];
        load_b_kn<LY>(r, yb, kk * 16, np * 16);
        mma_16816<kBf16>(s[2 * np], a, r[0], r[1]);
        mma_16816<kBf16>(s[2 * np + 1], a, r[2], r[3]);
      }
    }
    __syncthreads();  // every warp is done with this buffer (and s_A) before they are refilled
  }
  cp_async_wait<0>();
  if (last_out) {
#pragma unroll
    for (int nt = 0; nt < N / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = dk0 + r0 + 8 * (e >> 1), col = dv0 + nt * 8 + 2 * (lane % 4) + (e & 1);
        last_out[(sh * Cfg::kDk + r) * Cfg::kDv + col] = s[nt][e];
      }
  }
}

template <class Cfg>
AE_DEVICE void linear_state(const LinearParams& p) {
  carry_state<Cfg, false>(p);
}

// The output pass's tiles of chunk ch: Q, K ([C][DK + 8]), V ([C][DV + 8]; sV null: not now)
// and the state at its start ([DK][DV + 8]), cp.async, one group (rows past its sequence's end
// zero); load_out_v: V's copies alone (the caller commits).
AE_DEVICE const u16* out_rows(const void* base, const long long (&st)[3], const LinChunk& ch, int h) {
  return static_cast<const u16*>(base) + ch.b * st[0] + h * st[1] + ch.t0 * st[2];
}
template <class Cfg>
AE_DEVICE void load_out_v(const LinearParams& p, const LinChunk& ch, int h, u16* sV) {
  load_tile<Cfg::kChunk, Cfg::kDv, Cfg::kThreads>(sV, out_rows(p.v, p.v_stride, ch, h),
                                                  p.v_stride[2], ch.t_end - ch.t0);
}
template <class Cfg>
AE_DEVICE void load_out_tiles(const LinearParams& p, const LinChunk& ch, int h, u16* sQ, u16* sK,
                              u16* sV, u16* sS) {
  constexpr int C = Cfg::kChunk, DK = Cfg::kDk, DV = Cfg::kDv;
  const int rows = ch.t_end - ch.t0;
  const long long bh = static_cast<long long>(ch.b) * p.heads + h;
  load_tile<C, DK, Cfg::kThreads>(sQ, out_rows(p.q, p.q_stride, ch, h), p.q_stride[2], rows);
  load_tile<C, DK, Cfg::kThreads>(sK, out_rows(p.k, p.k_stride, ch, h), p.k_stride[2], rows);
  if (sV) load_out_v<Cfg>(p, ch, h, sV);
  load_tile<DK, DV, Cfg::kThreads>(sS, static_cast<const u16*>(p.chunk_states) + (bh * p.n_chunks + ch.chunk) * DK * DV,
                                   DV, DK);
  cp_async_commit();
}

// The tensor-core loops of this warp's 16 rows: acc (the C layout, N8 n8 tiles) += X Y over K
// (a multiple of 16), X and Y 16-bit tiles in shared memory read at the lanes' addresses
// (tile_io.h). The optional fa / fb scale a fragment of X / Y first; Unscaled: none.
struct Unscaled {
  template <class... T>
  AE_DEVICE void operator()(T&&...) const {}
};
// X [rows][K] (x_at: lane_a at the warp's first row) or, kXt, stored [K][rows] (lane_nk at its
// first column); Y [K][N] (y_at: lane_kn). fa(a, k): X's fragment of columns k .. k + 15.
template <bool kBf16, int K, int LX, int LY, bool kXt = false, int N8, class FA = Unscaled>
AE_DEVICE void mma_xy(float (&acc)[N8][4], u32 x_at, u32 y_at, FA fa = {}) {
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
    u32 a[4];
    if constexpr (kXt) load_a_t<LX>(a, x_at, kk * 16, 0);
    else load_a<LX>(a, x_at, 0, kk * 16);
    fa(a, kk * 16);
#pragma unroll
    for (int np = 0; np < N8 / 2; ++np) {
      u32 r[4];
      load_b_kn<LY>(r, y_at, kk * 16, np * 16);
      mma_16816<kBf16>(acc[2 * np], a, r[0], r[1]);
      mma_16816<kBf16>(acc[2 * np + 1], a, r[2], r[3]);
    }
  }
}
// X Y^T: X [rows][K] (x_at: lane_a at the warp's first row), Y's rows n0 .. of a [N][K] tile
// (y_at: lane_nk), both of row stride LD. fb(r, n): Y's fragment of rows n .. n + 15.
template <bool kBf16, int K, int LD, int N8, class FB = Unscaled>
AE_DEVICE void mma_xyt(float (&acc)[N8][4], u32 x_at, u32 y_at, int n0 = 0, FB fb = {}) {
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
    u32 a[4];
    load_a<LD>(a, x_at, 0, kk * 16);
#pragma unroll
    for (int np = 0; np < N8 / 2; ++np) {
      u32 r[4];
      load_b_nk<LD>(r, y_at, n0 + np * 16, kk * 16);
      fb(r, n0 + np * 16);
      mma_16816<kBf16>(acc[2 * np], a, r[0], r[1]);
      mma_16816<kBf16>(acc[2 * np + 1], a, r[2], r[3]);
    }
  }
}
// o += P Y: P (fp32 scores, the C layout, [C / 8] n8 tiles) as A operands, Y a [C][LD] tile
// (y_at: lane_kn): V, or K for dq.
template <class Cfg, int LD = Cfg::kDv + 8, int N8>
AE_DEVICE void add_pv(float (&o)[N8][4], const float (&s)[Cfg::kChunk / 8][4], u32 y_at) {
#pragma unroll
  for (int kk = 0; kk < Cfg::kChunk / 16; ++kk) {
    u32 a[4];
    acc_to_a<Cfg::kBf16>(a, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
    for (int np = 0; np < N8 / 2; ++np) {
      u32 r[4];
      load_b_kn<LD>(r, y_at, kk * 16, np * 16);
      mma_16816<Cfg::kBf16>(o[2 * np], a, r[0], r[1]);
      mma_16816<Cfg::kBf16>(o[2 * np + 1], a, r[2], r[3]);
    }
  }
}

// An accumulator tile (16 rows from r0 of the C layout) times `scale`, stored as 16-bit values:
// rows below `rows` only.
template <bool kBf16, int kN8>
AE_DEVICE void store_rows16(u16* g, long long ld, const float (&acc)[kN8][4], int r0, int rows,
                            float scale = 1.f) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = r0 + 8 * half;
    if (r >= rows) continue;
#pragma unroll
    for (int nt = 0; nt < kN8; ++nt)
      *reinterpret_cast<u32*>(g + r * ld + nt * 8 + 2 * (lane % 4)) =
          pack2<kBf16>(acc[nt][2 * half] * scale, acc[nt][2 * half + 1] * scale);
  }
}

// The largest |A_tc - A_anchor,c| over block W's 16 tokens t (from t0) and all DK key
// channels c (one maximum), on every lane of the warp.
template <int DK>
AE_DEVICE float block_decay_range(const float* s_Ac, int t0, int anchor) {
  const int lane = threadIdx.x % 32;
  float m = 0.f;
#pragma unroll
  for (int c = lane; c < DK; c += 32) {
    const float base = s_Ac[anchor * DK + c];
#pragma unroll
    for (int t = 0; t < 16; ++t) m = fmaxf(m, fabsf(s_Ac[(t0 + t) * DK + c] - base));
  }
#pragma unroll
  for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  return m;
}
// W's own block goes on the tensor cores where its decays span at most this (natural log):
// its factor on Y's side is then at most e^40 (bf16 has fp32's exponent range; fp16, whose
// largest value is e^11.1, gets 8), so that the pairs j > i, zeroed after the products, stay
// finite; past it, term by term.
template <bool kBf16>
constexpr float kLinDiagRange = kBf16 ? 40.f : 8.f;

// Per key channel, this warp's 16 rows (block W) of the chunk's scores
//   s_rt = sum_c x_rc y_tc exp(A_ic - A_jc) over the pairs (query i, key j), j <= i,
// X, Y: Q, K (rows queries: i = r, j = t), or with kKeys K, Q (rows keys: the scores
// transposed, j = r, i = t); 0 elsewhere. Y's blocks before W (after W, kKeys) on the tensor
// cores, both factors relative to W's first token (last, kKeys), both at most 1. W's own
// block the same way where its decays span at most kLinDiagRange (Y's factors there at least
// 1), the pairs past the diagonal zeroed after; else term by term.
template <class Cfg, bool kKeys>
AE_DEVICE void channel_scores(float (&s)[Cfg::kChunk / 8][4], const u16* sX, const u16* sY,
                              const float* s_Ac) {
  constexpr int C = Cfg::kChunk, DK = Cfg::kDk, LQ = DK + 8, NB = C / 16;
  constexpr bool kBf16 = Cfg::kBf16;
  constexpr float sx = kKeys ? -1.f : 1.f;  // X's factor exp(sx (A_r - A_anchor)), Y's the opposite
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int r0 = 16 * warp + lane / 4, anchor = kKeys ? 16 * warp + 15 : 16 * warp;
  const u32 x_at = lane_a<LQ>(smem_addr(sX)) + 2 * 16 * warp * LQ, y_at = lane_nk<LQ>(smem_addr(sY));
  auto Ac = [&](int t, int c) { return s_Ac[t * DK + c]; };
  const bool diag_mma = block_decay_range<DK>(s_Ac, 16 * warp, anchor) <= kLinDiagRange<kBf16>;
#pragma unroll
  for (int nt = 0; nt < C / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
  // (kk two at a time: fully unrolled, this and the backward's other per-channel loops
  // outgrew the instruction cache, and half of its warps' stalls were for instructions)
#pragma unroll 2
  for (int kk = 0; kk < DK / 16; ++kk) {
    if (!diag_mma && warp == (kKeys ? NB - 1 : 0)) break;  // (no block of Y on that side)
    u32 a[4];
    load_a<LQ>(a, x_at, 0, kk * 16);
    const int c = kk * 16 + 2 * (lane % 4);
    const float base[4] = {Ac(anchor, c), Ac(anchor, c + 1), Ac(anchor, c + 8), Ac(anchor, c + 9)};
    decay_a<DK, kBf16>(a, s_Ac, r0, c, base, sx);
#pragma unroll
    for (int J = 0; J < NB; ++J) {
      if ((kKeys ? J < warp : J > warp) || (J == warp && !diag_mma)) continue;
      u32 r[4];
      load_b_nk<LQ>(r, y_at, 16 * J, kk * 16);
      decay_b_nk<DK, kBf16>(r, s_Ac, 16 * J + lane / 4, c, base, -sx);
      mma_16816<kBf16>(s[2 * J], a, r[0], r[1]);
      mma_16816<kBf16>(s[2 * J + 1], a, r[2], r[3]);
    }
  }
#pragma unroll
  for (int J = 0; J < NB; ++J) {  // W's own block
    if (J != warp) continue;
#pragma unroll
    for (int h8 = 0; h8 < 2; ++h8)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = r0 + 8 * (e >> 1), t = 16 * J + 8 * h8 + 2 * (lane % 4) + (e & 1);
        const int i = kKeys ? t : r, j = kKeys ? r : t;
        if (diag_mma) {
          if (j > i) s[2 * J + h8][e] = 0.f;
          continue;
        }
        float sum = 0.f;
        if (j <= i)
#pragma unroll 2  // (the fallback: kept small, 32 copies of it)
          for (int d = 0; d < DK; ++d) {
            const float xy = to_float<kBf16>(sX[r * LQ + d]) * to_float<kBf16>(sY[t * LQ + d]);
            sum = fmaf(xy, lin_exp(Ac(i, d) - Ac(j, d)), sum);
          }
        s[2 * J + h8][e] = sum;
      }
  }
}

// The output pass per key channel (GLA): see the header. A_id from s_Ac [C][DK].
template <class Cfg>
AE_DEVICE void linear_out_channels(const LinearParams& p) {
  constexpr int C = Cfg::kChunk, DK = Cfg::kDk, DV = Cfg::kDv;
  constexpr int LQ = DK + 8, LV = DV + 8;
  constexpr bool kBf16 = Cfg::kBf16;
  static_assert(DK <= Cfg::kThreads, "a thread per channel for the prefix sums");
  extern __shared__ __align__(16) char smem[];
  // V takes the state's place once Q S is done (C <= DK rows): at D 128 two CTAs fit an SM
  // where the four tiles and the decays allowed one.
  static_assert(C <= DK, "V in the state's rows");
  u16* sQ = reinterpret_cast<u16*>(smem);  // [C][LQ]
  u16* sK = sQ + C * LQ;                   // [C][LQ]
  u16* sS = sK + C * LQ;                   // [DK][LV]: the state at the chunk's start, then V
  u16* sV = sS;                            // [C][LV]
  float* s_Ac = reinterpret_cast<float*>(sS + DK * LV);  // [C][DK]
  const LinChunk ch = linear_chunk(p, blockIdx.x, blockIdx.z);
  const int h = blockIdx.y, b = ch.b, t0 = ch.t0;
  const long long bh = static_cast<long long>(b) * p.heads + h;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, rows = ch.t_end - t0;
  linear_load_decays_channels<DK, Cfg::kThreads>(p, bh, t0, ch.t_end, 0, s_Ac);
  load_out_tiles<Cfg>(p, ch, h, sQ, sK, nullptr, sS);  // (commits the decays' copies too)
  cp_async_wait<0>();
  __syncthreads();
  linear_scan_channels<DK>(s_Ac);
  __syncthreads();

  const u32 q_at = lane_a<LQ>(smem_addr(sQ)) + 2 * 16 * warp * LQ;  // this warp's 16 queries
  const u32 v_at = lane_kn<LV>(smem_addr(sV)), st_at = lane_kn<LV>(smem_addr(sS));
  const int i0 = 16 * warp + lane / 4;  // this thread's rows i0, i0 + 8
  // From the state: O = (Q o exp(A)) S_start.
  float o[DV / 8][4];
#pragma unroll
  for (int nt = 0; nt < DV / 8; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;
  const float zero[4] = {0.f, 0.f, 0.f, 0.f};
  mma_xy<kBf16, DK, LQ, LV>(o, q_at, st_at, [&](u32 (&a)[4], int k) {
    decay_a<DK, kBf16>(a, s_Ac, i0, k + 2 * (lane % 4), zero, 1.f);
  });
  __syncthreads();  // every warp is done with the state: V loads into its place
  load_out_v<Cfg>(p, ch, h, sV);  // (while the scores within the chunk are summed)
  cp_async_commit();
  float s[C / 8][4];  // within the chunk
  channel_scores<Cfg, false>(s, sQ, sK, s_Ac);
  cp_async_wait<0>();
  __syncthreads();
  add_pv<Cfg>(o, s, v_at);
  store_rows16<kBf16>(static_cast<u16*>(p.o) + b * p.o_stride[0] + h * p.o_stride[1] + t0 * p.o_stride[2],
                      p.o_stride[2], o, i0, rows, p.scale);
}

template <class Cfg>
AE_DEVICE void linear_out_scalar(const LinearParams& p) {
  constexpr int C = Cfg::kChunk, DK = Cfg::kDk, DV = Cfg::kDv;
  constexpr int LQ = DK + 8, LV = DV + 8;
  constexpr bool kBf16 = Cfg::kBf16;
  extern __shared__ __align__(16) char smem[];
  u16* sQ = reinterpret_cast<u16*>(smem);  // [C][LQ]
  u16* sK = sQ + C * LQ;                   // [C][LQ]
  u16* sV = sK + C * LQ;                   // [C][LV]
  u16* sS = sV + C * LV;                   // [DK][LV]: the state at the chunk's start
  float* s_A = reinterpret_cast<float*>(sS + DK * LV);
  const LinChunk ch = linear_chunk(p, blockIdx.x, blockIdx.z);
  const int h = blockIdx.y, b = ch.b, t0 = ch.t0;
  const long long bh = static_cast<long long>(b) * p.heads + h;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, rows = ch.t_end - t0;
  linear_load_decays(p, bh, t0, ch.t_end, s_A);
  load_out_tiles<Cfg>(p, ch, h, sQ, sK, sV, sS);  // (commits the decays' copies too)
  cp_async_wait<0>();
  __syncthreads();
  linear_scan(s_A);
  __syncthreads();

  const u32 q_at = lane_a<LQ>(smem_addr(sQ)) + 2 * 16 * warp * LQ;  // this warp's 16 queries
  const u32 k_at = lane_nk<LQ>(smem_addr(sK));
  const u32 v_at = lane_kn<LV>(smem_addr(sV)), st_at = lane_kn<LV>(smem_addr(sS));
  const int i0 = 16 * warp + lane / 4;  // this thread's rows i0 and i0 + 8 of the chunk
  // From the state: O = Q S_start, rows scaled by exp(A_i).
  float o[DV / 8][4];
#pragma unroll
  for (int nt = 0; nt < DV / 8; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;
  mma_xy<kBf16, DK, LQ, LV>(o, q_at, st_at);
  const float Ai0 = s_A[i0], Ai8 = s_A[i0 + 8];
  const float e0 = lin_exp(Ai0), e8 = lin_exp(Ai8);
#pragma unroll
  for (int nt = 0; nt < DV / 8; ++nt) {
    o[nt][0] *= e0, o[nt][1] *= e0;
    o[nt][2] *= e8, o[nt][3] *= e8;
  }
  // Within the chunk: (Q K^T o D) V.
  float s[C / 8][4];
#pragma unroll
  for (int nt = 0; nt < C / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
  mma_xyt<kBf16, DK, LQ>(s, q_at, k_at);
#pragma unroll
  for (int nt = 0; nt < C / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int i = i0 + 8 * (e >> 1), j = nt * 8 + 2 * (lane % 4) + (e & 1);
      s[nt][e] = j <= i ? s[nt][e] * lin_exp((e >> 1 ? Ai8 : Ai0) - s_A[j]) : 0.f;
    }
  add_pv<Cfg>(o, s, v_at);
  store_rows16<kBf16>(static_cast<u16*>(p.o) + b * p.o_stride[0] + h * p.o_stride[1] + t0 * p.o_stride[2],
                      p.o_stride[2], o, i0, rows, p.scale);
}

template <class Cfg>
AE_DEVICE void linear_out(const LinearParams& p) {
  if constexpr (Cfg::kPerChannel) linear_out_channels<Cfg>(p);
  else linear_out_scalar<Cfg>(p);
}

}  // namespace ae::sm80
