// What the planner (csrc/plan) must know of the gfx90a templates: the LDS a forward or backward
// configuration needs, one definition for host and device (gfx90a/fwd.h and gfx90a/bwd.h check
// it against their own layouts).
#pragma once

#include "common/host_device.h"

namespace ae::gfx90a {

// Padding of an LDS row, in 16-bit elements: 8 bytes, so that the 64-bit operand reads of
// consecutive rows (the lanes of an MFMA operand) start 2 banks apart.
constexpr int kLdsPad = 4;

// Forward: one stage of K ([block_n][d_qk]) and of V transposed ([d_v][block_n]), 16-bit
// elements (the next tile waits in registers, not in a second LDS stage).
AE_HD_CONSTEXPR int fwd_lds_bytes(int block_n, int d_qk, int d_v) {
  return 2 * (block_n * (d_qk + kLdsPad) + d_v * (block_n + kLdsPad));
}

// Backward (gfx90a/bwd.h): keys per wave (MFMA 16x16x16: a wave's keys are one k-step of dQ).
constexpr int kBwdKeysPerWave = 16;

// Past head dim 128 a wave's K, V, dK and dV rows do not fit its registers: the backward's waves
// work in pairs that share 16 keys (one holds K and dV, the other V and dK), so a block of
// `waves` waves owns half as many keys.
AE_HD_CONSTEXPR bool bwd_paired(int d_qk, int d_v) { return d_qk > 128 || d_v > 128; }
AE_HD_CONSTEXPR int bwd_block_n(int waves, int d_qk, int d_v) {
  return kBwdKeysPerWave * waves / (bwd_paired(d_qk, d_v) ? 2 : 1);
}

// Backward: one query block's Q and dO as rows ([block_m][d]) and transposed ([d][block_m]),
// dS of the block's keys ([block_m][block_n]), 16-bit elements; the rows' log2 LSE and delta
// (fp32); paired waves: their exchange of dP (fp32) and dS, 4 bytes per score.
AE_HD_CONSTEXPR int bwd_lds_bytes(int block_m, int block_n, int d_qk, int d_v) {
  return 2 * (block_m * (d_qk + kLdsPad) + block_m * (d_v + kLdsPad) +
              (d_qk + d_v) * (block_m + kLdsPad) + block_m * (block_n + kLdsPad)) +
         2 * 4 * block_m + (bwd_paired(d_qk, d_v) ? 4 * block_m * block_n : 0);
}

// CDNA2's compute unit: 64 KB of LDS and 4 SIMDs, each with 512 VGPRs (architectural and
// accumulation registers together) per lane; waves of 64 lanes.
constexpr int kLdsPerCu = 64 * 1024;
constexpr int kSimdsPerCu = 4;

}  // namespace ae::gfx90a
