// Hopper (sm_90a) building blocks as inline PTX: mbarriers, TMA tile loads, wgmma
// fences and shared-memory matrix descriptors, and register reallocation between
// warpgroups.
#pragma once

#include "common/ae_common.h"
#include "common/params.h"

namespace ae::sm90 {

AE_DEVICE u32 smem_u32(const void* p) { return static_cast<u32>(__cvta_generic_to_shared(p)); }
// The first 1024-byte aligned address at or after p (128-byte swizzled TMA tiles need it; the
// templates' shared-memory formulas include the 1024 bytes of slack).
AE_DEVICE char* align_1024(char* p) { return p + ((1024 - (smem_u32(p) & 1023)) & 1023); }

// ---- mbarriers (one 8-byte word in shared memory each) ----
AE_DEVICE void mbar_init(u64* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count));
}
// Makes the initialized barriers visible to the other threads and to the TMA unit.
AE_DEVICE void mbar_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
AE_DEVICE void mbar_arrive(u64* bar) {
  asm volatile("{\n.reg .b64 s;\nmbarrier.arrive.shared::cta.b64 s, [%0];\n}\n" ::"r"(smem_u32(bar))
               : "memory");
}
// One arrival that also announces `bytes` of TMA traffic the phase must wait for.
AE_DEVICE void mbar_arrive_expect_tx(u64* bar, u32 bytes) {
  asm volatile("{\n.reg .b64 s;\nmbarrier.arrive.expect_tx.shared::cta.b64 s, [%0], %1;\n}\n" ::"r"(
                   smem_u32(bar)),
               "r"(bytes)
               : "memory");
}
// Announces `bytes` of TMA traffic the current phase must wait for, without arriving.
AE_DEVICE void mbar_expect_tx(u64* bar, u32 bytes) {
  asm volatile("mbarrier.expect_tx.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes)
               : "memory");
}
// Blocks until the phase with this parity has completed.
AE_DEVICE void mbar_wait(u64* bar, int parity) {
  asm volatile(
      "{\n.reg .pred done;\nWAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n}\n" ::"r"(smem_u32(bar)),
      "r"(parity)
      : "memory");
}

// ---- TMA: one box of a 4-D tensor map (dims innermost first) into shared memory ----
AE_DEVICE void tma_load_4d(void* dst, const TmaDesc* map, u64* bar, int c0, int c1, int c2, int c3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5, %6}], [%2];\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<u64>(map)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
      : "memory");
}
// ---- bulk reductions: `bytes` (a multiple of 16, both addresses 16-byte aligned) of fp32
// values in shared memory added into global memory by the TMA unit, in bulk groups ----
AE_DEVICE void bulk_reduce_add_f32(float* dst, const void* src, u32 bytes) {
  asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n" ::"l"(dst),
               "r"(smem_u32(src)), "r"(bytes)
               : "memory");
}
AE_DEVICE void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
// Waits until the committed groups but the last kPending have read their shared memory (it
// may be rewritten).
template <int kPending = 0>
AE_DEVICE void bulk_wait_read() {
  asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(kPending) : "memory");
}
// Stores a and b to `sink` (shared memory nobody reads), to keep what computes them ahead of
// a later wgmma wait: ptxas schedules a wgmma.wait_group as early as its dependences allow
// (ahead of the forward's whole softmax, so that the softmax no longer overlaps P V's GEMM),
// but keeps it behind an earlier shared-memory store. One store of the row sums keeps the
// softmax ahead (bench/RESULTS.md, fifteenth session).
AE_DEVICE void store_to_sink(u32 sink, float a, float b) {
  asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(sink), "f"(a), "f"(b) : "memory");
}
// Waits until they have completed.
AE_DEVICE void bulk_wait() { asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory"); }
AE_DEVICE void tma_prefetch_desc(const TmaDesc* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<u64>(map)) : "memory");
}

// Makes this thread's shared-memory stores (the generic proxy) visible to the async proxy
// (wgmma operands, TMA stores) once the threads have synchronized.
AE_DEVICE void fence_view_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Orders this thread's global-memory accesses of the generic proxy (loads, atomics) with
// those of the async proxy (bulk copies and reductions) on either side of it.
AE_DEVICE void fence_proxy_async_global() {
  asm volatile("fence.proxy.async.global;\n" ::: "memory");
}

// ---- wgmma ----
AE_DEVICE void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
AE_DEVICE void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
AE_DEVICE void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Pins accumulator registers at this point in program order: the compiler cannot see that
// a wgmma writes them asynchronously, so reads after wgmma_wait must not move above it.
template <int R>
AE_DEVICE void fence_regs(float (&d)[R][4]) {
#pragma unroll
  for (int i = 0; i < R; ++i)
    asm volatile("" : "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3])::"memory");
}

// Shared-memory matrix descriptor for a tile stored as TMA writes it with 128-byte swizzle:
// rows of 64 16-bit elements (128 bytes), 8-row groups 1024 bytes apart (SBO). `lbo`: the
// distance between 64-element column blocks, used when the MN dimension spans more than
// one (N-major B); K-major operands ignore it. Tiles start 1024-byte aligned.
AE_DEVICE u64 smem_desc(const void* p, u32 lbo) {
  const u64 addr = smem_u32(p);
  return ((addr & 0x3FFFF) >> 4) | (static_cast<u64>(lbo >> 4) << 16) |
         (static_cast<u64>(1024 >> 4) << 32) | (1ull << 62);
}
// The descriptor of the tile `bytes` (a multiple of 16, not negative) past desc's: an add
// to the address field, which never carries (shared memory is under 256 KB). A loop's wgmmas
// then cost one add each, not smem_desc's conversion and masks (which ptxas redid per wgmma, in vector
// registers moved to uniform ones: about 7 instructions each).
AE_DEVICE u64 desc_plus(u64 desc, int bytes) {
  const u32 lo = static_cast<u32>(desc) + (static_cast<u32>(bytes) >> 4);
  return (desc & 0xFFFFFFFF00000000ull) | lo;
}
// desc as the compiler can see that it is the same in the whole warp (a shuffle from lane
// 0): a descriptor from a warpgroup's own tile (its address depends on threadIdx) then stays
// in the uniform registers wgmma reads, and a loop's descriptors are uniform adds to it, not
// a move from vector registers each. (A uniform warpgroup index instead made the D128
// backward of masked variants spill: its loop-invariant descriptors were hoisted.)
AE_DEVICE u64 uniform_desc(u64 desc) {
  const u32 lo = __shfl_sync(0xffffffffu, static_cast<u32>(desc), 0);
  return (desc & 0xFFFFFFFF00000000ull) | lo;
}

// Four 8 x 8 16-bit matrices to shared memory (stmatrix, sm_90): lane l gives the address of
// row l % 8 of matrix l / 8; register j holds, in every lane, the lane's pair of matrix j in
// the mma C layout (row lane / 4, columns 2 (lane % 4) and the next), which is also a
// 16 x 16 A operand's register layout (nvidia/mma_rows.h p_to_a).
AE_DEVICE void stmatrix_x4(u32 addr, const u32 (&r)[4]) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n"
               ::"r"(addr), "r"(r[0]), "r"(r[1]), "r"(r[2]), "r"(r[3]) : "memory");
}

// A descriptor whose every row and column block is the same 1024-byte atom at p (LBO and
// SBO 0): a B operand of any shape that reads only those 1024 bytes.
AE_DEVICE u64 smem_desc_atom(const void* p) {
  return ((static_cast<u64>(smem_u32(p)) & 0x3FFFF) >> 4) | (1ull << 62);
}

// ---- warp specialization ----
// Named barriers 1..15 (0 is __syncthreads) over `threads` threads: sync waits, arrive not.
// (Immediate ids: a register id makes ptxas reserve all 16 barriers.)
template <int kId>
AE_DEVICE void named_bar_sync(int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"n"(kId), "r"(threads) : "memory");
}
template <int kId>
AE_DEVICE void named_bar_arrive(int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"n"(kId), "r"(threads) : "memory");
}
// The same with the barrier's id in a register (one per warpgroup: id + warpgroup).
AE_DEVICE void named_bar_sync_at(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
AE_DEVICE void named_bar_arrive_at(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
// A named barrier that also ORs a predicate over its threads (every one gets the result).
template <int kId>
AE_DEVICE bool named_bar_or(int threads, bool pred) {
  u32 r;
  asm volatile(
      "{\n.reg .pred p, q;\nsetp.ne.u32 p, %1, 0;\nbar.red.or.pred q, %2, %3, p;\n"
      "selp.u32 %0, 1, 0, q;\n}\n"
      : "=r"(r)
      : "r"(static_cast<u32>(pred)), "n"(kId), "r"(threads)
      : "memory");
  return r != 0;
}
template <int R>
AE_DEVICE void setmaxnreg_inc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(R)); }
template <int R>
AE_DEVICE void setmaxnreg_dec() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(R)); }

}  // namespace ae::sm90
