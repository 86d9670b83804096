// The gfx90a family's tile tables (templates/gfx90a/fwd.h, bwd.h). Sized, not yet measured (no MI250
// has run it): every configuration must leave 2 waves per SIMD, which the compile-all check
// reads back from the code objects (registers, LDS, no scratch).
#include <fmt/format.h>

#include <algorithm>

#include "gfx90a/shapes.h"
#include "plan/tile_tables.h"

namespace ae::plan {

// Rows per wave: 32 (MFMA 32x32x8) where the head dims allow, else 16 (MFMA 16x16x16). Per lane
// the forward holds Q (d_qk / 4 or d_qk / 8 VGPRs), O (d_v / 2 or d_v / 4), S (block_n / 2 or
// block_n / 4) and the next K/V tile in flight. With LDS at 64 KB per CU:
//   up to 64:   32 rows x 4 waves, 64 keys  (17 KB: 3 blocks per CU by LDS, 2 by registers)
//   up to 128:  32 rows x 4 waves, 32 keys  (18 KB at D128; 64 keys would need 34 KB and
//               leave one 4-wave block per CU)
//   otherwise:  16 rows x 8 waves, 32 keys  (35 KB at D256: one 8-wave block per CU = 2 waves
//               per SIMD)
// A forward of at most 64 query rows (decode, a GQA group packed as rows) takes 16 rows per wave
// up to D128 too: 64-row blocks do half the MFMA work of 128-row ones on rows that do not exist
// (decode reads K and V at about as many FLOPs per byte as the chip has with 128 rows).
Candidates gfx90a_forward(const TableQuery& q, bool few_rows) {
  Candidates c;
  auto ok = [](int d) { return d % 16 == 0 && d >= 16 && d <= 256; };
  if (!ok(q.d_qk) || !ok(q.d_v)) {
    c.refusal = fmt::format("head dims ({}, {}) have no gfx90a kernel: each must be a multiple of "
                            "16 between 16 and 256", q.d_qk, q.d_v);
    return c;
  }
  const int dmax = std::max(q.d_qk, q.d_v);
  const bool rows32 = dmax <= 128 && q.d_v % 32 == 0 && !few_rows;  // O^T tiles of 32 rows
  codegen::KernelSpec s;
  s.kind = codegen::Kind::Forward;
  s.family = codegen::Family::Gfx90a;
  s.d_qk = q.d_qk;
  s.d_v = q.d_v;
  s.bf16 = q.bf16;
  s.warps = rows32 || (few_rows && dmax <= 128) ? 4 : 8;
  s.block_m = (rows32 ? 32 : 16) * s.warps;
  s.block_n = rows32 && dmax <= 64 ? 64 : 32;
  c.specs.push_back(s);
  return c;
}

// The backward: 16 keys per wave (MFMA 16x16x16) in 8-wave blocks (128 keys), 32 queries per
// block. Per lane it holds its key's K and V rows (d / 8 VGPRs each), dK^T and dV^T (d / 4
// each), its head-dim tile of K^T for dQ (16) and S and dP of 32 queries (8 each): 230 VGPRs
// at D128 as hip-clang allocates them, within the 256 of 2 waves per SIMD. LDS: Q, dO, their
// transposes and dS, 44 KB at D128 (one block per CU: 2 waves per SIMD). Past 128 (D160 and
// 192/128 spilled that way) pairs of waves share 16 keys (gfx90a::bwd_paired), each holding
// one row of K or V and one of dK^T or dV^T: 64 keys per block, 32 queries where the LDS
// allows (up to 384 head-dim columns in all, 64 KB at 192/192), else 16 (43 KB at 256/256).
Candidates gfx90a_backward(const TableQuery& q) {
  Candidates c;
  auto ok = [](int d) { return d % 16 == 0 && d >= 16 && d <= 256; };
  if (!ok(q.d_qk) || !ok(q.d_v)) {
    c.refusal = fmt::format("head dims ({}, {}) have no gfx90a backward: each must be a multiple "
                            "of 16 between 16 and 256", q.d_qk, q.d_v);
    return c;
  }
  for (int block_m : {32, 16}) {
    codegen::KernelSpec s;
    s.kind = codegen::Kind::Backward;
    s.family = codegen::Family::Gfx90a;
    s.d_qk = q.d_qk;
    s.d_v = q.d_v;
    s.bf16 = q.bf16;
    s.warps = 8;
    s.block_m = block_m;
    s.block_n = gfx90a::bwd_block_n(s.warps, q.d_qk, q.d_v);
    c.specs.push_back(s);
    if (!gfx90a::bwd_paired(q.d_qk, q.d_v)) break;  // (44 KB at most: 32 rows always fit)
  }
  return c;
}

}  // namespace ae::plan
