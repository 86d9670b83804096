// What the planner (csrc/plan) must know of the sm80 templates: their fixed shapes and the
// shared memory a configuration needs, one definition for host and device (the templates'
// configs compute kSmemBytes with these and check them against their own layouts).
#pragma once

#include "common/host_device.h"

namespace ae::sm80 {

// Shared tiles are row-major with rows padded by 8 elements (tile_io.h).
AE_HD_CONSTEXPR int padded_row(int d) { return d + 8; }

// Forward: the Q tile and two stages of K and V tiles, 16-bit elements.
AE_HD_CONSTEXPR int fwd_smem_bytes(int block_m, int block_n, int d_qk, int d_v) {
  return 2 * (block_m * padded_row(d_qk) + 2 * block_n * padded_row(d_qk) +
              2 * block_n * padded_row(d_v));
}

// Decode (sm80/decode.h): one 16-row MMA tile per CTA, its warps splitting the keys; its
// shared memory is the forward's formula at block_m = kDecodeBlockM.
constexpr int kDecodeBlockM = 16;

// Paged K and V (tile_io.h tile_pages): the table columns a tile of block_n keys starting at
// a multiple of block_n spans, which a warp's lanes hold.
AE_HD_CONSTEXPR int paged_tile_columns(int block_n, int page) {
  return block_n % page == 0 ? block_n / page : page % block_n == 0 ? 1 : (block_n - 1) / page + 2;
}

// Backward: query blocks of 64 rows; 8 warps.
constexpr int kBwdBlockM = 64, kBwdWarps = 8;

// Backward: K and V; `stages` x (Q, dO, and the log2 LSE and delta of each query row); P^T
// and dS^T.
AE_HD_CONSTEXPR int bwd_smem_bytes(int block_n, int d_qk, int d_v, int stages) {
  return 2 * (block_n * (padded_row(d_qk) + padded_row(d_v)) +
              stages * kBwdBlockM * (padded_row(d_qk) + padded_row(d_v)) +
              2 * block_n * padded_row(kBwdBlockM)) +
         stages * 2 * 4 * kBwdBlockM;
}

// Linear attention's chunked forward (linear_fwd.h): chunks of 64 tokens, 4 warps; the state
// pass holds a 64 x 64 or 64 x 32 tile of the state per CTA (LinearConfig's kStateCols).
constexpr int kLinChunk = 64, kLinThreads = 128, kLinTile = 64;
// State pass: two buffers of the chunk's K and V columns (16-bit), two chunks' prefix sums;
// per key channel (GLA) also two buffers of the chunk's prefix sums of its 64 channels (fp32);
// the state tile on its way out (16-bit).
// cols: the tile's value columns (kLinTile or kLinTile / 2), its rows kLinTile key channels.
AE_HD_CONSTEXPR int linear_state_smem_bytes(bool per_channel = false, int cols = kLinTile) {
  return 2 * kLinChunk * (padded_row(kLinTile) + padded_row(cols)) * 2 + 2 * kLinChunk * 4 +
         (per_channel ? 2 * kLinChunk * kLinTile * 4 : 0) + kLinTile * padded_row(cols) * 2;
}
// Output pass: Q, K, V of the chunk and the state at its start (16-bit), its prefix sums; per
// key channel, those of every channel.
// (Per key channel V takes the state's place once Q S is done: linear_out_channels.)
AE_HD_CONSTEXPR int linear_out_smem_bytes(int d_k, int d_v, bool per_channel = false) {
  return per_channel
             ? 2 * (2 * kLinChunk * padded_row(d_k) + d_k * padded_row(d_v)) + kLinChunk * d_k * 4
             : 2 * (2 * kLinChunk * padded_row(d_k) + kLinChunk * padded_row(d_v) +
                    d_k * padded_row(d_v)) + kLinChunk * 4;
}

// Backward, per chunk (linear_bwd.h linear_grads): Q, K, V, dO, the chunk's start state and its
// end state's gradient, dP and P (16-bit); the prefix sums, two row terms per token, 4 warps'
// sums. Per key channel (GLA, linear_grads_channels): Q, K, dO, one state tile (the end
// state's gradient, then the start state), dP (16-bit); every channel's prefix sums, per
// channel the decays' end term and 4 warps' parts of it (fp32); V (16-bit), then in its place
// the decays' terms per token and channel (fp32).
AE_HD_CONSTEXPR int linear_grads_smem_bytes(int d_k, int d_v, bool per_channel = false) {
  if (per_channel) {
    const int v = 2 * kLinChunk * padded_row(d_v), x = 4 * kLinChunk * d_k;
    return 2 * (2 * kLinChunk * padded_row(d_k) + kLinChunk * padded_row(d_v) +
                d_k * padded_row(d_v) + kLinChunk * padded_row(kLinChunk)) +
           4 * (kLinChunk * d_k + 5 * d_k) + (v > x ? v : x);
  }
  return 2 * (2 * kLinChunk * padded_row(d_k) + 2 * kLinChunk * padded_row(d_v) +
              2 * d_k * padded_row(d_v) + 2 * kLinChunk * padded_row(kLinChunk)) +
         4 * (3 * kLinChunk + 4);
}

}  // namespace ae::sm80
