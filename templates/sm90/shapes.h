// What the planner (csrc/plan) must know of the sm90 forward: its fixed shape and the shared
// memory a configuration needs, one definition for host and device.
#pragma once

#include "common/host_device.h"

namespace ae::sm90 {

// A producer warpgroup and two consumer warpgroups of 64 query rows each.
constexpr int kFwdConsumers = 2;
constexpr int kFwdBlockM = 64 * kFwdConsumers, kFwdWarps = 4 * (kFwdConsumers + 1);

// 1024 bytes of slack to align the tiles to the 128-byte swizzle's 1024-byte period and a
// 1024-byte atom of zeros (the B operand of P V on tiles that nvidia/exact_pv.h adds); Q, and
// `stages` of K and V, as TMA writes them (16-bit elements, no padding); the mbarriers: Q
// full, K full, V full and empty per stage, Q empty; 8 bytes that the consumers store to and
// nobody reads (sm90/fwd.h, the softmax ahead of P V's wait); the block list (the key block
// of each stage) and the persistent kernel's tile slot.
AE_HD_CONSTEXPR int fwd_smem_bytes(int block_n, int d_qk, int d_v, int stages) {
  return 2048 + 2 * (kFwdBlockM * d_qk + stages * block_n * (d_qk + d_v)) + 8 * (2 + 3 * stages) +
         8 + 4 * (stages + 1);
}

// Backward: a producer warpgroup and kBwdMma MMA warpgroups of 64 keys each (wide: sharing 64
// keys, below); query blocks of 64 rows in a ring of two stages.
constexpr int kBwdMma = 2, kBwdBlockM = 64;
constexpr int kBwdWarps = 4 * (kBwdMma + 1), kBwdStages = 2;

// Wide head dims (Dqk + Dv past 320: 256 + 256, 256 + 128, 128 + 256): dK and dV of 64 keys
// per warpgroup would not fit its registers, so the MMA warpgroups share 64 keys, each holding
// half of dK's and dV's columns (sm90/bwd.h kWide); dO then has one stage (shared memory).
AE_HD_CONSTEXPR bool bwd_wide(int d_qk, int d_v) { return d_qk + d_v > 320; }
AE_HD_CONSTEXPR int bwd_block_n(int d_qk, int d_v) {
  return bwd_wide(d_qk, d_v) ? 64 : 64 * kBwdMma;
}

// 1024 bytes of slack for the swizzle's alignment; K and V; per stage Q, dO (one stage when
// wide), dS^T and, when wide, P^T (16-bit, as TMA writes them and as wgmma reads them) and the
// log2 LSE and delta of each query row; two 64 x 64 fp32 dQ tiles (one per MMA warpgroup at
// head dim 128, else shared: sm90/bwd.h kDqHalves); the mbarriers: K/V full, full and empty
// per stage, and when wide dO's full and empty; 8 bytes for the deterministic mode's turn
// (sm90/bwd.h).
AE_HD_CONSTEXPR int bwd_smem_bytes(int d_qk, int d_v) {
  const bool wide = bwd_wide(d_qk, d_v);
  const int bn = bwd_block_n(d_qk, d_v), do_stages = wide ? 1 : kBwdStages;
  return 1024 + 2 * (bn * (d_qk + d_v) + do_stages * kBwdBlockM * d_v +
                     kBwdStages * (kBwdBlockM * d_qk + (wide ? 2 : 1) * bn * kBwdBlockM)) +
         kBwdStages * 2 * 4 * kBwdBlockM + kBwdMma * 64 * 64 * 4 +
         8 * (2 + 2 * kBwdStages + (wide ? 2 : 0));
}

// MLA decode (sm90/mla_decode.h): one latent KV head whose first d_v columns are V, a producer
// warpgroup and two consumer warpgroups sharing 64 query rows (each owns half of the keys of
// S and half of O's columns).
constexpr int kMlaBlockM = 64, kMlaBlockN = 64, kMlaStages = 2, kMlaWarps = 12;
// DeepSeek-V2/V3's shape: 512 latent columns (V) and 64 of RoPE.
AE_HD_CONSTEXPR bool mla_has(int d_qk, int d_v) { return d_qk == 576 && d_v == 512; }

// 1024 bytes of slack for the swizzle's alignment and a 1024-byte atom of zeros (the B operand
// of P V on a tile that nvidia/exact_pv.h adds); Q and `kMlaStages` K tiles (V is K's first
// columns); P of one block (16-bit); the two warpgroups' row maxima (fp32, reused for the row
// sums at the end); the mbarriers: Q full, K full and empty per stage; the block list.
AE_HD_CONSTEXPR int mla_smem_bytes(int d_qk) {
  return 2048 + 2 * (kMlaBlockM * d_qk + kMlaStages * kMlaBlockN * d_qk) +
         2 * kMlaBlockM * kMlaBlockN + 4 * 2 * kMlaBlockM + 8 * (1 + 2 * kMlaStages) +
         4 * kMlaStages;
}

}  // namespace ae::sm90
