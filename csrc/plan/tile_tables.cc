#include "plan/tile_tables.h"

#include <fmt/format.h>

#include <algorithm>

#include "gfx90a/shapes.h"
#include "sm80/shapes.h"
#include "sm90/shapes.h"

namespace ae::plan {
namespace {

using codegen::Family;
using codegen::Kind;
using codegen::KernelSpec;

enum Match : signed char { kAny = -1, kNo = 0, kYes = 1 };
bool matches(Match m, bool value) { return m == kAny || (m == kYes) == value; }
bool set(int field) { return field != TuningOverrides::kUnset; }

// ---- sm80 forward: (warps, 16-row tiles per warp, keys per tile, ptxas level) ----
struct Sm80Fwd {
  int warps, m_tiles, block_n, reg_level;
};
struct Sm80FwdRule {
  int max_dim;  // of max(Dqk, Dv)
  Match score_loads, softmax;
  std::vector<Sm80Fwd> tiles;
};
// 64 keys halve the per-key share of the softmax and O's rescale. Up to D96 that fits
// easily; at D128 the 192 accumulators of a 32 x 64 S and a 32 x 128 O leave ~60 registers,
// enough at ptxas register-usage level 0 unless a captured tensor is read per score (then 32
// keys, as in the sm90 table). Up to D64, 96 keys where no captured tensor is read per score
// (H200, D64: plain +3-8%, causal +7-10%, bench/RESULTS.md; 128 keys spilled for most
// variants). Past D128, 8 warps of 16 rows. Where a block has less shared memory than the
// first pick needs (A100: 164 KB, Ada: 99 KB), 32-key tiles (and 4 warps past D128).
const std::vector<Sm80FwdRule>& sm80_fwd_rules() {
  static const std::vector<Sm80FwdRule> rules = {
      {64, kNo, kAny, {{4, 2, 96, -1}, {4, 2, 32, -1}}},
      {96, kAny, kAny, {{4, 2, 64, -1}, {4, 2, 32, -1}}},
      {128, kNo, kYes, {{4, 2, 64, 0}, {4, 2, 32, -1}}},
      {128, kNo, kNo, {{4, 2, 64, -1}, {4, 2, 32, -1}}},
      {128, kYes, kAny, {{4, 2, 32, -1}}},
      {256, kAny, kAny, {{8, 1, 64, -1}, {4, 1, 32, -1}}},
  };
  return rules;
}

// ---- sm80 backward: (keys per CTA, Q/dO stages, ptxas level); 8 warps, 64-query blocks ----
struct Sm80Bwd {
  int block_n, stages, reg_level;
};
struct Sm80BwdRule {
  int max_dim;
  std::vector<Sm80Bwd> tiles;
};
// 128 keys per CTA where dK and dV fit in registers (each warp holds 32 keys x half the head
// dim), else 64 keys (32 keys x a quarter); Q and dO double-buffered. The fully unrolled GEMM
// loops and 32-query S^T passes sit at the 255-register edge; level 0 keeps most variants
// unspilled at no measured cost (H200, plain and causal D128: the same TFLOPS at levels 0 and
// 5); KernelSpec::fallback_options covers the others. Smaller devices: single-buffered Q and
// dO first, then 64-key tiles.
const std::vector<Sm80BwdRule>& sm80_bwd_rules() {
  static const std::vector<Sm80BwdRule> rules = {
      {128, {{128, 2, 0}, {128, 1, 0}, {64, 1, 0}}},
      {256, {{64, 2, 0}, {64, 1, 0}}},
  };
  return rules;
}

// ---- sm90 forward: (keys per tile, ring stages, overlap, ping-pong); 128 query rows ----
struct Sm90Fwd {
  int block_n, stages;
  bool overlap, pingpong;
  bool wide = false;  // past the registers a per-score mask load or pow needs: skipped for them
  // The softmax kept ahead of the wait for P V (KernelSpec::softmax_ahead), where the
  // score_mod has no special function per score.
  bool ahead = false;
};
struct Sm90FwdRule {
  int max_dv;
  Match score_loads, softmax;
  std::vector<Sm90Fwd> tiles;
  Match mask_mod_loads = kAny;
};
// Consumer registers per thread: S (block_n / 2) + O (d_v / 2) + P (block_n / 4) fp32/bf16x2
// values plus ~40 of addressing must fit the 240 that setmaxnreg gives; a score_mod that
// loads captured tensors keeps its loads in flight too (128 keys spill: compile-all test).
// From the sweep (bench/RESULTS.md, 2026-11-21): overlap + ping-pong win for softmax at
// Dv <= 128 (plain D128 539 -> 576 TFLOPS) but lose at Dv = 256 (604 -> 511) and for
// normalize = none (481 -> 456). Key blocks wider than 128 (2026-12-02, 16k, the sweep's
// do_bench medians): D128 176 keys 588 -> 601 plain, 486 -> 515 causal, 471 -> 494 ALiBi;
// D64 192 keys 435 -> 452; D256 80 keys without overlap 628. Dqk 192 (MLA) has no room for
// 176 keys: 128. The wide tiles spill where the mask_mod loads a captured tensor per score
// (SeerAttention's block mask: compile-all check), and where the score_mod has a pow of a
// non-constant exponent (a decay gamma ** (q - k)); such variants keep the narrower tile.
// A mask_mod that loads captured tensors (a document mask) at D128 runs faster without the
// overlap and ping-pong (2026-12-03, 16k, bench/docmask_probe.py: causal documents 204 -> 234,
// non-causal 252 -> 313): its partial blocks' checked path and V scan (nvidia/exact_pv.h)
// stall the other warpgroup's turn.
// At D128 without loads, 128 keys in a ring of 3 stages beat the 176-key tiles (2026-12-03,
// bench/tile_probe.py, 16k tokens: causal 16k 478 -> 586, ALiBi 461 -> 500, window 300 -> 364,
// plain 564 -> 586, at 4k and 8k likewise; softcap 2-3% slower at 8k and 16k).
// The softmax ahead of P V's wait, in that tile only (2026-12-04, bench/template_ab.py, 8k,
// forward, the better of two rounds): plain 569 -> 593, causal 529 -> 535, ALiBi 461 -> 470;
// softcap 480 -> 458 (its tanh per score), D64's 192-key tiles 382 -> 352 plain, 378 -> 292
// causal, D192/128's 128-key tiles -9%. Flag off against the table in a later call: plain
// +2%, causal +3%, ALiBi -1.5% (noise there: up to 2%).
const std::vector<Sm90FwdRule>& sm90_fwd_rules() {
  static const std::vector<Sm90FwdRule> rules = {
      {64, kNo, kYes, {{192, 2, true, true, true}, {128, 2, true, true}, {64, 2, true, true}}},
      {128, kNo, kYes, {{128, 2, false, false}, {64, 2, false, false}}, kYes},
      {128, kNo, kYes,
       {{128, 3, true, true, false, true},
        {176, 2, true, true, true},
        {128, 2, true, true},
        {64, 2, true, true}}},
      {128, kNo, kNo, {{128, 2, false, false}, {64, 2, false, false}}},
      {128, kYes, kYes, {{64, 2, true, true}}},
      {128, kYes, kNo, {{64, 2, false, false}}},
      {256, kNo, kAny, {{80, 2, false, false, true}, {64, 2, false, false}}},
      {256, kYes, kAny, {{64, 2, false, false}}},
  };
  return rules;
}

KernelSpec base_spec(Kind kind, Family family, const TableQuery& q) {
  KernelSpec s;
  s.kind = kind;
  s.family = family;
  s.d_qk = q.d_qk;
  s.d_v = q.d_v;
  s.bf16 = q.bf16;
  return s;
}

// Why the sm80 templates cannot take these head dims (empty when they can).
std::string sm80_refusal(const TableQuery& q) {
  auto ok = [](int d) { return d % 16 == 0 && d >= 16 && d <= 256; };
  if (ok(q.d_qk) && ok(q.d_v)) return {};
  return fmt::format("head dims ({}, {}) have no sm80 kernel: each must be a multiple of 16 "
                     "between 16 and 256", q.d_qk, q.d_v);
}

}  // namespace

Candidates sm80_forward(const TableQuery& q, const TuningOverrides& o) {
  Candidates c;
  if (c.refusal = sm80_refusal(q); !c.refusal.empty()) return c;
  const int dmax = std::max(q.d_qk, q.d_v);
  for (const Sm80FwdRule& r : sm80_fwd_rules()) {
    if (dmax > r.max_dim || !matches(r.score_loads, q.score_loads) || !matches(r.softmax, q.softmax))
      continue;
    for (const Sm80Fwd& t : r.tiles) {
      KernelSpec s = base_spec(Kind::Forward, Family::Sm80, q);
      s.warps = t.warps;
      s.m_tiles = t.m_tiles;
      s.block_n = t.block_n;
      s.reg_level = t.reg_level;
      c.specs.push_back(s);
    }
    break;
  }
  KernelSpec& first = c.specs.front();
  if (o.sm80_fwd[0] == 4 || o.sm80_fwd[0] == 8) {  // applies when its warps are valid
    first.warps = o.sm80_fwd[0];
    if (o.sm80_fwd[1] == 1 || o.sm80_fwd[1] == 2) first.m_tiles = o.sm80_fwd[1];
    if (o.sm80_fwd[2] > 0 && o.sm80_fwd[2] % 16 == 0) first.block_n = o.sm80_fwd[2];
    if (o.sm80_fwd[3] >= -1 && o.sm80_fwd[3] <= 10) first.reg_level = o.sm80_fwd[3];
  }
  for (KernelSpec& s : c.specs) s.block_m = 16 * s.m_tiles * s.warps;
  return c;
}

// Keys per block (split between the warps, 16 at least each): 128, or 64 where 128 does not fit
// shared memory (head dims past 128). Not measured yet: the first table.
Candidates decode_forward(const TableQuery& q, const TuningOverrides& o) {
  Candidates c;
  if (c.refusal = sm80_refusal(q); !c.refusal.empty()) return c;
  for (int block_n : {128, 64}) {
    KernelSpec s = base_spec(Kind::Forward, Family::Sm80, q);
    s.decode = true;
    s.warps = 4;
    s.block_m = sm80::kDecodeBlockM;
    s.block_n = block_n;
    c.specs.push_back(s);
  }
  KernelSpec& first = c.specs.front();
  const int bn = o.decode[0], warps = o.decode[1];
  if ((warps == 2 || warps == 4 || warps == 8) && bn > 0 && bn % (16 * warps) == 0 && bn <= 256)
    first.block_n = bn, first.warps = warps;
  return c;
}

Candidates sm80_backward(const TableQuery& q, const TuningOverrides& o) {
  Candidates c;
  if (c.refusal = sm80_refusal(q); !c.refusal.empty()) return c;
  const int dmax = std::max(q.d_qk, q.d_v);
  for (const Sm80BwdRule& r : sm80_bwd_rules()) {
    if (dmax > r.max_dim) continue;
    for (const Sm80Bwd& t : r.tiles) {
      KernelSpec s = base_spec(Kind::Backward, Family::Sm80, q);
      s.warps = sm80::kBwdWarps;
      s.block_m = sm80::kBwdBlockM;
      s.block_n = t.block_n;
      s.stages = t.stages;
      s.reg_level = t.reg_level;
      c.specs.push_back(s);
    }
    break;
  }
  KernelSpec& first = c.specs.front();
  if (o.sm80_bwd[0] == 64 || o.sm80_bwd[0] == 128) {
    first.block_n = o.sm80_bwd[0];
    if (o.sm80_bwd[1] == 1 || o.sm80_bwd[1] == 2) first.stages = o.sm80_bwd[1];
    if (o.sm80_bwd[2] >= -1 && o.sm80_bwd[2] <= 10) first.reg_level = o.sm80_bwd[2];
  }
  return c;
}

bool sm90_forward_has(int d_qk, int d_v) {
  return d_qk % 64 == 0 && d_qk >= 64 && d_qk <= 256 && (d_v == 64 || d_v == 128 || d_v == 256);
}

// dK and dV live in the MMA warpgroups' registers (sm90/bwd.h): Dqk up to 192 and Dv up to 128
// with each warpgroup's own keys (192 + 192 would not fit), or half of 256 + 256 (wide; each
// warpgroup's half a whole number of 64-column blocks).
bool sm90_backward_has(int d_qk, int d_v) {
  const bool narrow = d_qk % 64 == 0 && d_v % 64 == 0 && d_qk >= 64 && d_v >= 64 &&
                      d_qk <= 192 && d_v <= 128;
  const bool wide = sm90::bwd_wide(d_qk, d_v) && (d_qk == 128 || d_qk == 256) &&
                    (d_v == 128 || d_v == 256);
  return narrow || wide;
}

TableQuery sm90_padded(TableQuery q, HasKernel has) {
  if (has(q.d_qk, q.d_v)) return q;
  auto paddable = [](int d) { return d >= 64 && d <= 256 && d % 16 == 0; };
  if (!paddable(q.d_qk) || !paddable(q.d_v)) return q;
  int best_qk = 0, best_v = 0;
  for (int a = (q.d_qk + 63) / 64 * 64; a <= 256; a += 64)
    for (int b = (q.d_v + 63) / 64 * 64; b <= 256; b += 64)
      if (has(a, b) && (best_qk == 0 || a + b < best_qk + best_v)) best_qk = a, best_v = b;
  if (best_qk != 0) q.d_qk = best_qk, q.d_v = best_v;
  return q;
}

Candidates sm90_forward(const TableQuery& asked, const TuningOverrides& o) {
  Candidates c;
  const TableQuery q = sm90_padded(asked, sm90_forward_has);
  if (!sm90_forward_has(q.d_qk, q.d_v)) {
    c.refusal = fmt::format("head dims ({}, {}) have no sm90 kernel: Dqk a multiple of 64 up to "
                            "256, Dv 64, 128 or 256 (or multiples of 16 padded up to those)",
                            asked.d_qk, asked.d_v);
    return c;
  }
  for (const Sm90FwdRule& r : sm90_fwd_rules()) {
    if (q.d_v > r.max_dv || !matches(r.score_loads, q.score_loads) ||
        !matches(r.softmax, q.softmax) || !matches(r.mask_mod_loads, q.mask_mod_loads))
      continue;
    for (const Sm90Fwd& t : r.tiles) {
      if (t.wide && (q.mask_loads || q.score_pow)) continue;
      KernelSpec s = base_spec(Kind::Forward, Family::Sm90, q);
      s.arch = "sm_90a";  // wgmma, setmaxnreg: arch-specific code
      s.warps = sm90::kFwdWarps;
      s.block_m = sm90::kFwdBlockM;
      s.block_n = t.block_n;
      s.stages = t.stages;
      s.overlap = t.overlap;
      s.pingpong = t.pingpong;
      s.softmax_ahead = t.ahead && !q.score_special;
      s.padded = q.d_qk != asked.d_qk || q.d_v != asked.d_v;
      c.specs.push_back(s);
    }
    break;
  }
  // A block tensor's blocks of fewer keys than the tile: the tiles that fit in a block first
  // (2026-12-05, bench/sparse_bench.py, 32k causal D128, random 64-key blocks, forward: 10%
  // kept 18.56 ms with 128-key tiles, 11.11 ms with 64-key ones; 50% 47.38 -> 33.23 ms; dense
  // causal 15.1-15.5 ms). A tile across blocks is partial wherever they differ, its mask
  // looked up per score.
  if (q.mask_block_k > 0)
    std::stable_partition(c.specs.begin(), c.specs.end(), [&](const KernelSpec& s) {
      return q.mask_block_k % s.block_n == 0;
    });
  KernelSpec& first = c.specs.front();
  const KernelSpec table_first = first;
  const int bn = o.sm90_fwd[0], st = o.sm90_fwd[1];
  // Any multiple of 16 keys from 64 to 192 whose registers fit (the estimate above).
  // A width without a stage count gets two stages: the table's three fit 128 keys only.
  if (bn % 16 == 0 && bn >= 64 && bn <= 192 && bn * 3 / 4 + q.d_v / 2 + 40 <= 240) {
    if (bn != first.block_n) first.stages = 2;
    first.block_n = bn;
  }
  if (st >= 1 && st <= 4) first.stages = st;
  if (set(o.sm90_fwd[2])) first.overlap = o.sm90_fwd[2] != 0;
  if (set(o.sm90_fwd[3])) first.pingpong = o.sm90_fwd[3] != 0;
  // The softmax ahead of P V's wait: as given, else as the table has the overridden tile
  // (measured per tile: off where the table has no such tile).
  if (set(o.sm90_fwd[4])) {
    first.softmax_ahead = o.sm90_fwd[4] != 0;
  } else if (first.block_n != table_first.block_n || first.stages != table_first.stages) {
    const auto same = std::find_if(c.specs.begin() + 1, c.specs.end(), [&](const KernelSpec& s) {
      return s.block_n == first.block_n && s.stages == first.stages;
    });
    first.softmax_ahead = same != c.specs.end() && same->softmax_ahead;
  }
  // The overlap issues S of block it + 1 before block it's stage is released: one stage would
  // wait forever (sm90/fwd.h asserts it). Such an override keeps two.
  if (first.overlap && first.stages < 2) first.stages = 2;
  return c;
}

// The sm90 backward (sm90/shapes.h): 64-query blocks, 128 keys per CTA, past 256 columns of
// dK + dV its scores in two parts (sm90/bwd.h kScoreParts); wide (past 320 columns: 256 + 256,
// 256 + 128, 128 + 256) 64 keys per CTA, the MMA warpgroups splitting dK's and dV's columns.
Candidates sm90_backward(const TableQuery& asked) {
  Candidates c;
  const TableQuery q = sm90_padded(asked, sm90_backward_has);
  if (!sm90_backward_has(q.d_qk, q.d_v)) {
    c.refusal = fmt::format("head dims ({}, {}) have no sm90 backward: Dqk 64, 128 or 192 and Dv "
                            "64 or 128, or Dqk and Dv 128 or 256 with one of them 256 (or "
                            "multiples of 16 padded up to those)", asked.d_qk, asked.d_v);
    return c;
  }
  // Past 256 columns a learnable captured tensor's gradient sums spilled and serialized the
  // wgmmas (compile-all check, a learnable relative bias at 192 + 128), and the wide kernel's
  // shared memory leaves no room for their shared copy: the sm80 backward.
  if (q.d_qk + q.d_v > 256 && q.captured_grads) {
    c.refusal = fmt::format("head dims ({}, {}) (run as {} / {}) with a captured tensor's gradient "
                            "have no sm90 backward: Dqk + Dv <= 256", asked.d_qk, asked.d_v,
                            q.d_qk, q.d_v);
    return c;
  }
  KernelSpec s = base_spec(Kind::Backward, Family::Sm90, q);
  s.arch = "sm_90a";
  s.warps = sm90::kBwdWarps;
  s.block_m = sm90::kBwdBlockM;
  s.block_n = sm90::bwd_block_n(q.d_qk, q.d_v);
  s.padded = q.d_qk != asked.d_qk || q.d_v != asked.d_v;
  s.stages = sm90::kBwdStages;
  c.specs.push_back(s);
  return c;
}

Candidates sm90_mla_forward(const TableQuery& q) {
  Candidates c;
  if (!sm90::mla_has(q.d_qk, q.d_v)) {
    c.refusal = fmt::format("head dims ({}, {}) have no MLA decode kernel: (576, 512) only",
                            q.d_qk, q.d_v);
    return c;
  }
  KernelSpec s;
  s.kind = Kind::Forward;
  s.family = Family::Sm90;
  s.mla = true;
  s.bf16 = q.bf16;
  s.d_qk = q.d_qk;
  s.d_v = q.d_v;
  s.block_m = sm90::kMlaBlockM;
  s.block_n = sm90::kMlaBlockN;
  s.warps = sm90::kMlaWarps;
  s.stages = sm90::kMlaStages;
  s.overlap = s.pingpong = false;  // (its own schedule: sm90/mla_decode.h)
  c.specs.push_back(s);
  return c;
}

int smem_bytes(const KernelSpec& s) {
  switch (s.kind) {
    case Kind::Forward:
      if (s.family == Family::Gfx90a) return gfx90a::fwd_lds_bytes(s.block_n, s.d_qk, s.d_v);
      // (paged: the page-table window past the template's own, sm90/fwd.h page_win)
      if (s.family == Family::Sm90 && s.mla)
        return sm90::mla_smem_bytes(s.d_qk) + (s.layout == codegen::Layout::Paged ? 4 * 32 : 0);
      return s.family == Family::Sm90 ? sm90::fwd_smem_bytes(s.block_n, s.d_qk, s.d_v, s.stages) +
                                            (s.layout == codegen::Layout::Paged ? 4 * 32 : 0)
                                      : sm80::fwd_smem_bytes(s.block_m, s.block_n, s.d_qk, s.d_v);
    case Kind::Backward:
      if (s.family == Family::Gfx90a)
        return gfx90a::bwd_lds_bytes(s.block_m, s.block_n, s.d_qk, s.d_v);
      return s.family == Family::Sm90 ? sm90::bwd_smem_bytes(s.d_qk, s.d_v)
                                      : sm80::bwd_smem_bytes(s.block_n, s.d_qk, s.d_v, s.stages);
    case Kind::BlockState:
    case Kind::BlockStateBlocks:
    case Kind::BwdPrep:
    case Kind::BwdDq:
    case Kind::BwdRowsCustom:
    case Kind::FwdCombine:
    case Kind::VCheck: return 0;
  }
  return 0;
}

}  // namespace ae::plan
