#include "codegen/kernel_spec.h"

#include <fmt/format.h>

namespace ae::codegen {

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::Forward: return "fwd";
    case Kind::Backward: return "bwd";
    case Kind::BlockState: return "block_state";
    case Kind::BwdPrep: return "bwd_prep";
    case Kind::BwdDq: return "bwd_dq";
    case Kind::FwdCombine: return "fwd_combine";
    case Kind::BwdRowsCustom: return "bwd_rows_custom";
    case Kind::VCheck: return "v_check";
    case Kind::BlockStateBlocks: return "block_state_blocks";
    case Kind::PoolMap: return "pool_map";
    case Kind::LinearStep: return "linear_step";
    case Kind::LinearState: return "linear_state";
    case Kind::LinearOut: return "linear_out";
    case Kind::LinearDState: return "linear_dstate";
    case Kind::LinearGrads: return "linear_grads";
  }
  return "?";
}

const char* family_name(Family f) {
  switch (f) {
    case Family::Common: return "common";
    case Family::Sm80: return "sm80";
    case Family::Sm90: return "sm90";
    case Family::Gfx90a: return "gfx90a";
  }
  return "?";
}

std::string KernelSpec::entry() const { return fmt::format("ae_{}", kind_name(kind)); }

// The layout's mark in describe(). It names every layout-dependent kernel, the block-state
// pass and the combine included: describe() keys the process's kernel registry, and a combine
// built for dense rows, reused on packed sequences, wrote the wrong rows (an illegal address
// on the H200).
std::string KernelSpec::layout_mark() const {
  switch (layout) {
    case Layout::KvLengths: return " kvlens";
    case Layout::Paged: return fmt::format(" page{}", page_size);
    case Layout::Varlen: return " varlen";
    case Layout::Dense: break;
  }
  return "";
}

std::string KernelSpec::describe() const {
  const char* dtype = bf16 ? "bf16" : "fp16";
  switch (kind) {
    case Kind::BlockState:  // no dtype, no tiles
      return fmt::format("block_state {}{}", arch, layout_mark());
    case Kind::BlockStateBlocks:  // (what the variant's key does not say: the tensor's dtype)
      return fmt::format("block_state_blocks {} {}{}", arch,
                         blocks_buffer >= 0 && blocks_buffer < static_cast<int>(buffer_dtypes.size())
                             ? buffer_dtypes[blocks_buffer]
                             : "?",
                         layout_mark());
    case Kind::FwdCombine: return fmt::format("fwd_combine {} {}{}", arch, dtype, layout_mark());
    case Kind::PoolMap: return fmt::format("pool_map {}", arch);  // (fp32 rows)
    case Kind::LinearStep:
    case Kind::LinearState:
    case Kind::LinearOut:
    case Kind::LinearDState:
    case Kind::LinearGrads:
      return fmt::format("{} {} {} d{}/{}{}{}", kind_name(kind), arch, dtype, d_qk, d_v,
                         per_channel ? " pc" : "",
                         block_n > 0 ? fmt::format(" cols{}", block_n) : "");
    case Kind::BwdPrep:
    case Kind::BwdDq:
    case Kind::VCheck: return fmt::format("{} {} {}", kind_name(kind), arch, dtype);
    case Kind::BwdRowsCustom: {  // no dtype (fp32 rows); the gradients it adds into
      std::string grads;
      for (size_t i = 0; i < buffer_grads.size(); ++i)
        if (buffer_grads[i]) grads += fmt::format("{}{}", grads.empty() ? " dbuf" : ",", i);
      return fmt::format("{} {}{}", kind_name(kind), arch, grads);
    }
    case Kind::Forward:
    case Kind::Backward: break;
  }
  std::string grads;  // the captured tensors the backward adds gradients into
  for (size_t i = 0; i < buffer_grads.size(); ++i)
    if (buffer_grads[i]) grads += fmt::format("{}{}", grads.empty() ? " dbuf" : ",", i);
  if (!grads.empty() && grad_sink == GradSink::Shared) grads += " smem";
  return fmt::format("{}{} {} {} d{}/{} {}x{} w{}{}{}{}{}{}{}{}{}{}{}{}{}{}{}{}{}{}", kind_name(kind),
                     family == Family::Sm90 ? "90" : "", arch, dtype, d_qk, d_v, block_m, block_n,
                     warps, m_tiles > 1 ? fmt::format(" mt{}", m_tiles) : "",
                     (kind == Kind::Backward && family != Family::Gfx90a) || family == Family::Sm90
                         ? fmt::format(" s{}", stages)
                         : "",
                     family == Family::Sm90 && kind == Kind::Forward
                         ? fmt::format("{}{}{}", overlap ? " ov" : "", overlap && pingpong ? " pp" : "",
                                       overlap && softmax_ahead ? " sa" : "")
                         : "",
                     reg_level >= 0 ? fmt::format(" r{}", reg_level) : "", grads,
                     deterministic ? " det" : "", kv_split ? " split" : "", persistent ? " pers" : "",
                     decode ? " dec" : "", mla ? " mla" : "",
                     plain_loads ? " plain" : "", trust_v ? " trustv" : "",
                     mask_load_mode >= 0 ? fmt::format(" ml{}", mask_load_mode) : "",
                     padded ? " pad" : "",
                     pool_block > 0 ? fmt::format(" pool{}", pool_block) : "",
                     key_halves ? " kh" : "", layout_mark());
}

std::vector<std::string> KernelSpec::compile_options() const {
  if (reg_level < 0) return {};
  return {fmt::format("-Xptxas=--register-usage-level={}", reg_level)};
}

std::vector<std::vector<std::string>> KernelSpec::fallback_options() const {
  if (arch.rfind("sm_", 0) != 0 || family == Family::Common) return {};
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

}  // namespace ae::codegen
