// What the planner (csrc/plan) must know of the sm90 forward: its fixed shape and the shared
// memory a configuration needs, one definition for host and device.
#pragma once

#include "common/host_device.h"

namespace ae::sm90 {

// A producer warpgroup and two consumer warpgroups of 64 query rows each.
constexpr int kFwdConsumers = 2;
constexpr int kFwdBlockM = 64 * kFwdConsumers, kFwdWarps = 4 * (kFwdConsumers + 1);

// 1024 bytes of slack to align the tiles to the 128-byte swizzle's 1024-byte period; Q, and
// `stages` of K and V, as TMA writes them (16-bit elements, no padding); the mbarriers: Q
// full, and K full, V full and empty per stage.
AE_HD_CONSTEXPR int fwd_smem_bytes(int block_n, int d_qk, int d_v, int stages) {
  return 1024 + 2 * (kFwdBlockM * d_qk + stages * block_n * (d_qk + d_v)) + 8 * (1 + 3 * stages);
}

}  // namespace ae::sm90
