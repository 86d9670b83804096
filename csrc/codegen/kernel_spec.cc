#include "codegen/kernel_spec.h"

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <iterator>

#include "codegen/emit_variant.h"

namespace ae::codegen {
namespace {

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::Forward: return "fwd";
    case Kind::Backward: return "bwd";
    case Kind::BlockState: return "block_state";
  }
  return "?";
}

// The choice, or a refusal when its tiles do not fit the device's shared memory.
TileChoice checked_smem(TileChoice c, int smem_limit) {
  const KernelSpec& s = c.spec;
  if (smem_bytes(s) > smem_limit) {
    c.reason = fmt::format("{} needs {} bytes of shared memory, the device allows {}",
                           s.describe(), smem_bytes(s), smem_limit);
    return c;
  }
  c.ok = true;
  return c;
}

}  // namespace

std::string KernelSpec::entry() const { return fmt::format("ae_{}", kind_name(kind)); }

std::string KernelSpec::describe() const {
  std::string grads;  // the captured tensors the backward adds gradients into
  for (size_t i = 0; i < buffer_grads.size(); ++i)
    if (buffer_grads[i]) grads += fmt::format("{}{}", grads.empty() ? " dbuf" : ",", i);
  return fmt::format("{}{} {} {} d{}/{} {}x{} w{}{}{}{}{}{}", kind_name(kind),
                     family == Family::Sm90 ? "90" : "", arch, bf16 ? "bf16" : "fp16", d_qk, d_v,
                     block_m, block_n, warps, m_tiles > 1 ? fmt::format(" mt{}", m_tiles) : "",
                     kind == Kind::Backward ? fmt::format(" s{}", stages) : "",
                     family == Family::Sm90 ? fmt::format(" s{}{}{}", stages, overlap ? " ov" : "",
                                                          overlap && pingpong ? " pp" : "")
                                            : "",
                     reg_level >= 0 ? fmt::format(" r{}", reg_level) : "", grads);
}

std::vector<std::string> KernelSpec::compile_options() const {
  if (reg_level < 0) return {};
  return {fmt::format("-Xptxas=--register-usage-level={}", reg_level)};
}

std::vector<std::vector<std::string>> KernelSpec::fallback_options() const {
  if (arch.rfind("sm_", 0) != 0) return {};
  // Levels 0 and ptxas's default (5); other levels measured no better (bench/RESULTS.md).
  auto at_level = [this](int level, const char* extra) {
    KernelSpec alt = *this;
    alt.reg_level = level;
    std::vector<std::string> o = alt.compile_options();
    if (extra) o.push_back(extra);
    return o;
  };
  std::vector<std::vector<std::string>> out;
  for (int level : {0, -1})
    if (level != reg_level) out.push_back(at_level(level, nullptr));
  // sm80/bwd.h's kQC: 16-query passes, where it would take 32 (128 keys per CTA, and Q's
  // 16-byte chunks dividing the 256 threads); elsewhere it is 16 already.
  const int chunks = d_qk / 8;
  if (kind == Kind::Backward && family == Family::Sm80 && block_n == 128 && 256 % chunks == 0 &&
      64 % (256 / chunks) == 0)
    for (int level : {-1, 0}) out.push_back(at_level(level, "-DAE_BWD_QUERY_CHUNK=16"));
  return out;
}

int smem_bytes(const KernelSpec& s) {
  if (s.family == Family::Sm90)  // must match sm90::FwdConfig::kSmemBytes
    return 1024 + 2 * (s.block_m * s.d_qk + s.stages * s.block_n * (s.d_qk + s.d_v)) +
           8 * (1 + 3 * s.stages);
  const int ldqk = s.d_qk + 8, ldv = s.d_v + 8;
  switch (s.kind) {
    case Kind::Forward: return 2 * (s.block_m * ldqk + 2 * s.block_n * ldqk + 2 * s.block_n * ldv);
    case Kind::Backward:  // must match sm80::BwdConfig::kSmemBytes: K, V, `stages` x (Q, dO,
                          // lse and delta per query row), P^T and dS^T
      return 2 * (s.block_n * (ldqk + ldv) + s.stages * s.block_m * (ldqk + ldv) +
                  2 * s.block_n * (s.block_m + 8)) + s.stages * 2 * 4 * s.block_m;
    case Kind::BlockState: return 0;
  }
  return 0;
}

std::string instantiate(const ir::Variant& variant, const KernelSpec& s) {
  std::string src;
  auto out = std::back_inserter(src);
  fmt::format_to(out, "// attention_engine kernel: {}\n", s.describe());
  switch (s.kind) {
    case Kind::Forward:
      src += s.family == Family::Sm90 ? "#include \"sm90/fwd.h\"\n" : "#include \"sm80/fwd.h\"\n";
      break;
    case Kind::Backward: src += "#include \"sm80/bwd.h\"\n"; break;
    case Kind::BlockState: src += "#include \"common/block_state.h\"\n"; break;
  }
  src += "#include \"common/variant_support.h\"\n\nnamespace {\n\n";
  src += emit_variant(variant, s.buffer_dtypes, s.buffer_grads);
  src += "\n}  // namespace\n\n";
  const char* elem = s.bf16 ? "true" : "false";
  // The host launches with smem_bytes(s); the template must agree (checked when compiled).
  const std::string smem_check =
      s.kind == Kind::BlockState
          ? std::string()
          : fmt::format("static_assert(Cfg::kSmemBytes == {}, \"host and template disagree on "
                        "shared memory\");\n", smem_bytes(s)) +
                (s.kind == Kind::Backward  // dq_accum's rows: whole blocks of the host's block_m
                     ? fmt::format("static_assert(Cfg::kBlockM == {}, \"host and template "
                                   "disagree on the query block\");\n", s.block_m)
                     : std::string());
  // An sm80 entry: the config, the smem check, one extern "C" kernel calling `fn`.
  auto sm80_entry = [&](const std::string& cfg, const char* fn) {
    fmt::format_to(out,
                   "using Cfg = ae::sm80::{};\n{}"
                   "extern \"C\" __global__ void __launch_bounds__({}, 1) {}(const ae::AttnParams p, "
                   "const ae::VariantArgs va) {{\n"
                   "  ae::sm80::{}<Cfg>(p, Variant{{va}});\n}}\n",
                   cfg, smem_check, s.threads(), s.entry(), fn);
  };
  switch (s.kind) {
    case Kind::Forward:
      if (s.family == Family::Sm90) {
        // Tensor maps and arguments are __grid_constant__: kernels take their addresses.
        fmt::format_to(out,
                       "using Cfg = ae::sm90::FwdConfig<{}, {}, {}, {}, {}, {}, {}>;\n{}"
                       "extern \"C\" __global__ void __launch_bounds__({}, 1) {}(\n"
                       "    const __grid_constant__ ae::AttnParams p, const __grid_constant__ "
                       "ae::VariantArgs va,\n"
                       "    const __grid_constant__ ae::TmaDesc tq, const __grid_constant__ "
                       "ae::TmaDesc tk,\n"
                       "    const __grid_constant__ ae::TmaDesc tv) {{\n"
                       "  ae::sm90::attention_fwd<Cfg>(p, Variant{{va}}, &tq, &tk, &tv);\n}}\n",
                       s.d_qk, s.d_v, s.block_n, s.stages, s.overlap, s.pingpong, elem, smem_check,
                       s.threads(), s.entry());
        break;
      }
      sm80_entry(fmt::format("FwdConfig<{}, {}, {}, {}, {}, {}>", s.d_qk, s.d_v, s.block_n, s.warps,
                             s.m_tiles, elem),
                 "attention_fwd");
      break;
    case Kind::Backward:
      sm80_entry(fmt::format("BwdConfig<{}, {}, {}, {}, {}>", s.d_qk, s.d_v, s.block_n, s.stages,
                             elem),
                 "attention_bwd");
      break;
    case Kind::BlockState:
      fmt::format_to(out,
                     "extern \"C\" __global__ void __launch_bounds__(128) {}(const ae::AttnParams p, "
                     "const ae::VariantArgs va, unsigned char* state, int block_m, int block_n, "
                     "int per_batch, int per_head) {{\n"
                     "  ae::block_state(p, Variant{{va}}, state, block_m, block_n, per_batch, "
                     "per_head);\n}}\n",
                     s.entry());
      break;
  }
  return src;
}

TileHints tile_hints(const ir::Variant& v) {
  return {v.analysis.score_loads_per_element, v.forward.normalize == ir::Normalize::Softmax};
}

TileChoice choose_sm80(Kind kind, int d_qk, int d_v, bool bf16, TileHints hints, int smem_limit) {
  TileChoice c;
  if (d_qk % 16 != 0 || d_v % 16 != 0 || d_qk > 256 || d_v > 256 || d_qk < 16 || d_v < 16) {
    c.reason = fmt::format("head dims ({}, {}) have no sm80 kernel: each must be a multiple "
                           "of 16 between 16 and 256", d_qk, d_v);
    return c;
  }
  KernelSpec& s = c.spec;
  s.kind = kind;
  s.d_qk = d_qk;
  s.d_v = d_v;
  s.bf16 = bf16;
  const int dmax = d_qk > d_v ? d_qk : d_v;
  if (kind == Kind::Forward) {
    // 64 keys halve the per-key share of the softmax and O's rescale. Up to D96 that fits
    // easily; at D128 the 192 accumulators of a 32 x 64 S and a 32 x 128 O leave ~60
    // registers, enough at ptxas register-usage level 0 unless a captured tensor is read
    // per score (then 32 keys, as in the sm90 table). Up to D64, 96 keys where no captured
    // tensor is read per score (H200, D64: plain +3-8%, causal +7-10%, bench/RESULTS.md;
    // 128 keys spilled for most variants). Past D128, 8 warps of 16 rows.
    const bool tight = dmax > 96 && dmax <= 128;
    s.warps = dmax <= 128 ? 4 : 8;
    s.m_tiles = dmax <= 128 ? 2 : 1;
    s.block_n = dmax <= 96 || dmax > 128 || !hints.score_loads ? 64 : 32;
    if (dmax <= 64 && !hints.score_loads) s.block_n = 96;
    if (tight && s.block_n == 64 && hints.softmax) s.reg_level = 0;
    s.block_m = 16 * s.m_tiles * s.warps;
  } else {
    // 8 warps, 64-query blocks; 128 keys per CTA where dK and dV fit in registers (each warp
    // holds 32 keys x half the head dim), else 64 keys (32 keys x a quarter).
    s.warps = 8;
    s.block_m = 64;
    s.block_n = dmax <= 128 ? 128 : 64;
    s.stages = 2;  // Q and dO double-buffered
    // The fully unrolled GEMM loops and 32-query S^T passes sit at the 255-register edge;
    // level 0 keeps most variants unspilled at no measured cost (H200, plain and causal D128:
    // the same TFLOPS at levels 0 and 5); fallback_options covers the others.
    s.reg_level = 0;
  }
  // Tile overrides for tuning sweeps (bench/tile_sweep.py) until the autotuner exists:
  // AE_SM80_FWD="warps,m_tiles,block_n[,reg_level]", AE_SM80_BWD="block_n,stages[,reg_level]".
  if (const char* o = std::getenv(kind == Kind::Forward ? "AE_SM80_FWD" : "AE_SM80_BWD")) {
    int v[4] = {0, 0, 0, -2};  // the fields in order; 0 (reg_level: -2) where absent
    const int n = std::sscanf(o, "%d,%d,%d,%d", &v[0], &v[1], &v[2], &v[3]);
    if (kind == Kind::Forward && n >= 1 && (v[0] == 4 || v[0] == 8)) {
      s.warps = v[0];
      if (v[1] == 1 || v[1] == 2) s.m_tiles = v[1];
      if (v[2] > 0 && v[2] % 16 == 0) s.block_n = v[2];
      if (v[3] >= -1 && v[3] <= 10) s.reg_level = v[3];
      s.block_m = 16 * s.m_tiles * s.warps;
    } else if (kind == Kind::Backward && n >= 1 && (v[0] == 64 || v[0] == 128)) {
      s.block_n = v[0];
      if (v[1] == 1 || v[1] == 2) s.stages = v[1];
      if (v[2] >= -1 && v[2] <= 10) s.reg_level = v[2];
    }
  }
  // The forward's 64-key tiles need 104 KB of shared memory at D128 and 200 KB at D256:
  // where a block has less (A100: 164 KB, Ada: 99 KB), 32-key tiles (and 4 warps past D128).
  if (kind == Kind::Forward && smem_bytes(s) > smem_limit) {
    s.block_n = 32;
    s.reg_level = -1;
    if (dmax > 128) s.warps = 4;
    s.block_m = 16 * s.m_tiles * s.warps;
  }
  // Smaller devices (A100: 164 KB per block, Ada: 99 KB): single-buffered Q and dO first,
  // then 64-key tiles.
  if (kind == Kind::Backward && smem_bytes(s) > smem_limit) s.stages = 1;
  if (kind == Kind::Backward && smem_bytes(s) > smem_limit) s.block_n = 64;
  return checked_smem(c, smem_limit);
}

TileChoice choose_sm90(int d_qk, int d_v, bool bf16, TileHints hints, int smem_limit) {
  TileChoice c;
  if (d_qk % 64 != 0 || d_qk > 256 || (d_v != 64 && d_v != 128 && d_v != 256)) {
    c.reason = fmt::format("head dims ({}, {}) have no sm90 kernel: Dqk a multiple of 64 up to "
                           "256, Dv 64, 128 or 256", d_qk, d_v);
    return c;
  }
  KernelSpec& s = c.spec;
  s.kind = Kind::Forward;
  s.family = Family::Sm90;
  s.arch = "sm_90a";
  s.d_qk = d_qk;
  s.d_v = d_v;
  s.bf16 = bf16;
  s.warps = 12;  // producer warpgroup + 2 consumer warpgroups
  s.block_m = 128;
  // Consumer registers per thread: S (block_n / 2) + O (d_v / 2) + P (block_n / 4) fp32/bf16x2
  // values plus ~40 of addressing must fit the 240 that setmaxnreg gives; a score_mod that
  // loads captured tensors keeps its loads in flight too (128 keys spill: compile-all test).
  s.block_n = d_v <= 128 && !hints.score_loads ? 128 : 64;
  s.stages = 2;
  // From the sweep (bench/RESULTS.md, 2026-11-21): overlap + ping-pong win for softmax at
  // Dv <= 128 (plain D128 539 -> 576 TFLOPS) but lose at Dv = 256 (604 -> 511) and for
  // normalize = none (481 -> 456).
  s.overlap = s.pingpong = d_v <= 128 && hints.softmax;
  // AE_SM90_FWD="block_n,stages,overlap,pingpong" for tuning sweeps until the autotuner
  // exists (bench/tile_sweep.py).
  if (const char* o = std::getenv("AE_SM90_FWD")) {
    int bn = 0, st = 0, ov = 1, pp = 1;
    const int n = std::sscanf(o, "%d,%d,%d,%d", &bn, &st, &ov, &pp);
    if (n >= 1 && (bn == 64 || bn == 128) && !(bn == 128 && d_v > 128)) s.block_n = bn;
    if (n >= 2 && st >= 1 && st <= 4) s.stages = st;
    if (n >= 3) s.overlap = ov != 0;
    if (n >= 4) s.pingpong = pp != 0;
  }
  while (smem_bytes(s) > smem_limit && s.stages > 2) --s.stages;
  if (smem_bytes(s) > smem_limit) s.block_n = 64;
  return checked_smem(c, smem_limit);
}

}  // namespace ae::codegen
