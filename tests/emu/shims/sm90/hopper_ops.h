// The emulator's templates/sm90/hopper_ops.h (same API, tests/emu/cuda_host.h underneath):
// mbarriers as arrival / transaction counters with a phase parity, a TMA load copied at once
// (128-byte swizzle, zeros outside the tensor) that then completes its bytes on the barrier,
// named barriers as fiber barriers, and wgmma's fences and waits as nothing (the wgmma
// stand-ins, wgmma.h here, compute when issued). Descriptors are built as the real ones are.
// test_nvidia_emulated.py checks that this declares every function the real header does.
#pragma once

#include "common/ae_common.h"
#include "common/params.h"

namespace ae::sm90 {

AE_DEVICE u32 smem_u32(const void* p) { return static_cast<u32>(__cvta_generic_to_shared(p)); }
AE_DEVICE char* align_1024(char* p) { return p + ((1024 - (smem_u32(p) & 1023)) & 1023); }

// ---- mbarriers ----
AE_DEVICE emu::MBarrier& mbar_of(u64* bar) { return emu::block->mbar[smem_u32(bar)]; }
AE_DEVICE void mbar_init(u64* bar, int count) {
  emu::MBarrier& b = mbar_of(bar);
  b.count = b.pending = count;
  b.tx = 0;
  b.phase = 0;
}
AE_DEVICE void mbar_init_fence() {}
AE_DEVICE void mbar_arrive(u64* bar) {
  emu::maybe_yield();
  emu::MBarrier& b = mbar_of(bar);
  if (b.count == 0) emu::fail("mbarrier arrive before init");
  --b.pending;
  b.maybe_complete();
}
AE_DEVICE void mbar_expect_tx(u64* bar, u32 bytes) {
  emu::MBarrier& b = mbar_of(bar);
  b.tx += bytes;
  ++emu::progress;
}
AE_DEVICE void mbar_arrive_expect_tx(u64* bar, u32 bytes) {
  mbar_expect_tx(bar, bytes);
  mbar_arrive(bar);
}
AE_DEVICE void mbar_wait(u64* bar, int parity) {
  // try_wait.parity: done once the phase of that parity has completed (the current phase's
  // parity differs)
  while (mbar_of(bar).phase == static_cast<unsigned>(parity & 1)) emu::yield();
}

// ---- TMA ----
AE_DEVICE void tma_load_4d(void* dst, const TmaDesc* map, u64* bar, int c0, int c1, int c2, int c3) {
  emu::maybe_yield();
  emu::TmaMap m;
  std::memcpy(&m, map, sizeof(m));
  const u32 base = smem_u32(dst);
  for (int r = 0; r < m.box_rows; ++r)
    for (int c = 0; c < 64; ++c) {
      const long long x[4] = {c0 + c, c1 + r, c2, c3};
      u16 v = 0;
      bool in = true;
      for (int d = 0; d < 4; ++d) in = in && x[d] >= 0 && x[d] < m.dims[d];
      if (in)
        std::memcpy(&v, m.base + 2 * x[0] + x[1] * m.strides[0] + x[2] * m.strides[1] + x[3] * m.strides[2], 2);
      const u32 off = emu::swizzle128(base + r * 128 + c * 2);
      if (off + 2 > emu::smem_bytes) emu::fail("TMA load past shared memory");
      std::memcpy(emu::smem + off, &v, 2);
    }
  emu::MBarrier& b = mbar_of(bar);
  b.tx -= 128ll * m.box_rows;
  // (expect_tx precedes the loads in program order here, so more bytes than announced is a
  // wrong count, which on a GPU could complete the phase early)
  if (b.tx < 0) emu::fail("TMA bytes past the mbarrier's expect_tx");
  b.maybe_complete();
}
AE_DEVICE void bulk_reduce_add_f32(float* dst, const void* src, u32 bytes) {
  const float* s = static_cast<const float*>(src);
  for (u32 i = 0; i < bytes / 4; ++i) dst[i] += s[i];
}
AE_DEVICE void bulk_commit() {}
template <int kPending = 0>
AE_DEVICE void bulk_wait_read() {}
AE_DEVICE void store_to_sink(u32 sink, float a, float b) {
  const float v[2] = {a, b};
  std::memcpy(emu::smem + sink, v, 8);
}
AE_DEVICE void bulk_wait() {}
AE_DEVICE void tma_prefetch_desc(const TmaDesc*) {}
AE_DEVICE void fence_view_async_shared() {}
AE_DEVICE void fence_proxy_async_global() {}

// ---- wgmma (the instructions: wgmma.h) ----
AE_DEVICE void wgmma_fence() {}
AE_DEVICE void wgmma_commit() {}
template <int N>
AE_DEVICE void wgmma_wait() {}
template <int R>
AE_DEVICE void fence_regs(float (&)[R][4]) {}

// As the real ones.
AE_DEVICE u64 smem_desc(const void* p, u32 lbo) {
  const u64 addr = smem_u32(p);
  return ((addr & 0x3FFFF) >> 4) | (static_cast<u64>(lbo >> 4) << 16) |
         (static_cast<u64>(1024 >> 4) << 32) | (1ull << 62);
}
AE_DEVICE u64 desc_plus(u64 desc, int bytes) {
  const u32 lo = static_cast<u32>(desc) + (static_cast<u32>(bytes) >> 4);
  return (desc & 0xFFFFFFFF00000000ull) | lo;
}
AE_DEVICE u64 uniform_desc(u64 desc) {
  const u32 lo = __shfl_sync(0xffffffffu, static_cast<u32>(desc), 0);
  return (desc & 0xFFFFFFFF00000000ull) | lo;
}
AE_DEVICE u64 smem_desc_atom(const void* p) {
  return ((static_cast<u64>(smem_u32(p)) & 0x3FFFF) >> 4) | (1ull << 62);
}

// stmatrix x4: lane l gives the address of row l % 8 of matrix l / 8; register j of lane l
// holds the pair (row l / 4, columns 2 (l % 4), + 1) of matrix j.
AE_DEVICE void stmatrix_x4(u32 addr, const u32 (&r)[4]) {
  struct Lane {
    u32 addr, r[4];
  } mine{addr, {r[0], r[1], r[2], r[3]}}, all[emu::kLanes];
  emu::all_lanes(mine, all);
  if (emu::lane() == 0)
    for (int j = 0; j < 4; ++j)
      for (int row = 0; row < 8; ++row)
        for (int q = 0; q < 4; ++q)
          std::memcpy(emu::smem + all[8 * j + row].addr + 4 * q, &all[4 * row + q].r[j], 4);
  __syncwarp();
}

// ---- named barriers ----
AE_DEVICE emu::NamedBarrier& named(int id, int threads) {
  emu::NamedBarrier& b = emu::block->named[id];
  if (b.bar.count == 0) b.bar.n = threads;
  else if (b.bar.n != threads) emu::fail("named barrier used with two thread counts in one phase");
  return b;
}
AE_DEVICE void named_bar_sync_at(int id, int threads) { named(id, threads).bar.arrive_and_wait(); }
AE_DEVICE void named_bar_arrive_at(int id, int threads) { named(id, threads).bar.arrive(); }
template <int kId>
AE_DEVICE void named_bar_sync(int threads) { named_bar_sync_at(kId, threads); }
template <int kId>
AE_DEVICE void named_bar_arrive(int threads) { named_bar_arrive_at(kId, threads); }
template <int kId>
AE_DEVICE bool named_bar_or(int threads, bool pred) {
  emu::NamedBarrier& b = named(kId, threads);
  b.vote = b.vote || pred;
  if (!b.bar.on_phase)
    b.bar.on_phase = [&b] {
      b.result = b.vote;
      b.vote = false;
    };
  b.bar.arrive_and_wait();
  return b.result;
}
template <int R>
AE_DEVICE void setmaxnreg_inc() {}
template <int R>
AE_DEVICE void setmaxnreg_dec() {}

}  // namespace ae::sm90
