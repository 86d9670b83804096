// The deterministic backward's order of additions into dQ. dQ tile (b, hq, m_block) gets fp32
// additions from each key block that sees it (one, or sm90/bwd.h's kDqAdds); in arrival order
// the rounding differs run to run. Under KernelSpec::deterministic the adders of a tile go in
// a fixed order, launch order (the CTAs of one (batch, KV head) as ReversedBlocks hands them
// out: key blocks from the last), kept by a counter per tile (dq_order, zeroed by the prep row
// pass): an adder waits until the counter says every earlier adder has finished, adds, and
// counts itself. A CTA only waits for CTAs launched before it, which are resident or done
// (CTAs are dispatched in launch order): no deadlock. Each tile's adders form a chain, one
// addition complete before the next starts: 0.75-0.85x the default's fwd+bwd at head dim 128,
// causal or not (bench/RESULTS.md).
#pragma once

#include "common/block_walk.h"
#include "common/numeric.h"
#include "common/params.h"
#include "common/tile_scheduler.h"

namespace ae {

// How many adders come before key block n_block's addition into tile (b, hq, m_block): the
// key blocks after it (launched before it) whose walk visits the tile (the table's code is
// not empty; `states`: the walk reads the table, as ColumnWalk's). Every lane of the warp calls it.
AE_DEVICE int dq_rank(const AttnParams& p, int b, int hq, int m_block, int n_block, bool states) {
  if (!states) return p.n_kv_blocks - 1 - n_block;
  const unsigned char* row = p.block_state + b * p.state_stride_b + hq * p.state_stride_h +
                             static_cast<long long>(m_block) * p.n_kv_blocks;
  int count = 0;
  for (int j = n_block + 1; j < p.n_kv_blocks; j += kWarpSize) {
    const int c = j + static_cast<int>(threadIdx.x % kWarpSize);
    count += popcount(ballot(c < p.n_kv_blocks && tile_code(row[c]) != kBlockEmpty));
  }
  return count;
}

AE_DEVICE int* dq_order_at(const AttnParams& p, int b, int hq, int m_block) {
  return p.dq_order + (static_cast<long long>(b) * p.q_heads + hq) * p.n_q_blocks + m_block;
}

// Waits (one thread) until the tile's counter reaches `count`; what the earlier adders wrote
// before counting themselves is visible after it.
AE_DEVICE void dq_order_wait(const int* counter, int count) {
#if AE_NVIDIA
  int v;
  do {
    asm volatile("ld.acquire.gpu.global.b32 %0, [%1];\n" : "=r"(v) : "l"(counter) : "memory");
  } while (v < count);
#else
  while (__atomic_load_n(counter, __ATOMIC_ACQUIRE) < count) {
  }
#endif
}

// Counts this adder (one thread, after its additions are complete and visible to it).
AE_DEVICE void dq_order_arrive(int* counter) {
#if AE_NVIDIA
  asm volatile("red.release.gpu.global.add.s32 [%0], 1;\n" ::"l"(counter) : "memory");
#else
  __atomic_fetch_add(counter, 1, __ATOMIC_RELEASE);
#endif
}

}  // namespace ae
