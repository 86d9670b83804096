#include "codegen/instantiate.h"

#include <fmt/format.h>

#include <iterator>

#include "codegen/emit_variant.h"
#include "codegen/kernel_abi.h"
#include "ir/error.h"

namespace ae::codegen {
namespace {

// Which template a spec instantiates: its header, its config type (empty: none), the call
// the entry makes, and __launch_bounds__'s second argument (0: none). On NVIDIA it is the CTAs
// per SM the entry promises (1 for the big templates, which take the whole register file); on
// AMD, hip-clang reads it as the waves per SIMD the register allocation must leave room for.
struct Template {
  const char* header;
  std::string config;
  std::string call;
  int second_bound;
};

std::string layout_type(const KernelSpec& s) {
  switch (s.layout) {
    case Layout::Dense: return "ae::DenseLayout";
    case Layout::KvLengths: return "ae::KvLengthsLayout";
    case Layout::Paged: return fmt::format("ae::PagedLayout<{}>", s.page_size);
    case Layout::Varlen: return "ae::VarlenLayout";
  }
  return "?";
}

Template template_of(const KernelSpec& s) {
  const char* elem = s.bf16 ? "true" : "false";
  const std::string layout = layout_type(s);
  switch (s.kind) {
    case Kind::Forward:
      if (s.family == Family::Gfx90a)  // 2 waves per SIMD: the occupancy the table is sized for
        return {"gfx90a/fwd.h",
                fmt::format("ae::gfx90a::FwdConfig<{}, {}, {}, {}, {}, {}, {}, {}>", s.d_qk, s.d_v,
                            s.block_m, s.block_n, s.warps, elem, layout, s.kv_split),
                "ae::gfx90a::attention_fwd<Cfg>(p, Variant{va})", 2};
      if (s.family == Family::Sm90 && s.mla)
        return {"sm90/mla_decode.h",
                fmt::format("ae::sm90::MlaConfig<{}, {}, {}, {}, {}>", s.d_qk, s.d_v, elem, layout,
                            s.kv_split),
                "ae::sm90::attention_mla_decode<Cfg>(p, Variant{va}, &tq, &tk)", 1};
      if (s.family == Family::Sm90)
        // Tensor maps are __grid_constant__: the kernel takes their addresses.
        return {"sm90/fwd.h",
                fmt::format("ae::sm90::FwdConfig<{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}>",
                            s.d_qk, s.d_v, s.block_n, s.stages, s.overlap, s.pingpong, elem,
                            layout, s.kv_split, s.persistent, s.softmax_ahead, s.padded),
                "ae::sm90::attention_fwd<Cfg>(p, Variant{va}, &tq, &tk, &tv)", 1};
      if (s.decode)  // up to 2 CTAs per SM where shared memory allows: no ", 1"
        return {"sm80/decode.h",
                fmt::format("ae::sm80::DecodeConfig<{}, {}, {}, {}, {}, {}, {}>", s.d_qk, s.d_v,
                            s.block_n, s.warps, elem, layout, s.kv_split),
                "ae::sm80::attention_decode<Cfg>(p, Variant{va})", 0};
      return {"sm80/fwd.h",
              fmt::format("ae::sm80::FwdConfig<{}, {}, {}, {}, {}, {}, {}, {}>", s.d_qk, s.d_v,
                          s.block_n, s.warps, s.m_tiles, elem, layout, s.kv_split),
              "ae::sm80::attention_fwd<Cfg>(p, Variant{va})", 1};
    case Kind::Backward:
      if (s.family == Family::Gfx90a)  // 2 waves per SIMD, as the forward
        return {"gfx90a/bwd.h",
                fmt::format("ae::gfx90a::BwdConfig<{}, {}, {}, {}, {}, {}, {}, {}>", s.d_qk, s.d_v,
                            s.block_m, s.block_n, s.warps, elem, layout, s.deterministic),
                "ae::gfx90a::attention_bwd<Cfg>(p, Variant{va})", 2};
      if (s.family == Family::Sm90)
        return {"sm90/bwd.h",
                fmt::format("ae::sm90::BwdConfig<{}, {}, {}, {}, {}, {}>", s.d_qk, s.d_v, elem,
                            layout, s.deterministic, s.padded),
                "ae::sm90::attention_bwd<Cfg>(p, Variant{va}, &tq, &tk, &tv, &tdo)", 1};
      return {"sm80/bwd.h",
              fmt::format("ae::sm80::BwdConfig<{}, {}, {}, {}, {}, {}, {}>", s.d_qk, s.d_v,
                          s.block_n, s.stages, elem, layout, s.deterministic),
              "ae::sm80::attention_bwd<Cfg>(p, Variant{va})", 1};
    case Kind::BlockState:
      return {"common/block_state.h", "", fmt::format("ae::block_state<{}>(p, Variant{{va}}, bs)", layout), 0};
    case Kind::BwdPrep:
      return {"common/bwd_rows.h", "", fmt::format("ae::bwd_prep<{}>(rp)", elem), 0};
    case Kind::BwdDq:
      return {"common/bwd_rows.h", "", fmt::format("ae::bwd_dq<{}>(rp)", elem), 0};
    case Kind::BwdRowsCustom:
      return {"common/bwd_rows.h", "", "ae::bwd_rows_custom(rp, Variant{va})", 0};
    case Kind::FwdCombine:
      return {"common/split_combine.h", "", fmt::format("ae::fwd_combine<{}, {}>(p)", elem, layout),
              0};
    case Kind::VCheck:
      return {"common/v_check.h", "", fmt::format("ae::v_check<{}>(p)", elem), 0};
    case Kind::PoolMap:
      return {"common/pool_map.h", "", "ae::pool_map(p)", 0};
    case Kind::LinearStep:
      return {"common/linear_step.h", "",
              fmt::format("ae::linear_step<{}, {}>(lp)", elem, s.d_qk), 0};
    case Kind::LinearState:
    case Kind::LinearOut:
    case Kind::LinearDState:
    case Kind::LinearGrads:
      return {s.kind == Kind::LinearState || s.kind == Kind::LinearOut ? "sm80/linear_fwd.h"
                                                                       : "sm80/linear_bwd.h",
              fmt::format("ae::sm80::LinearConfig<{}, {}, {}, {}{}>", s.d_qk, s.d_v, elem,
                          s.per_channel, s.block_n > 0 ? fmt::format(", {}", s.block_n) : ""),
              fmt::format("ae::sm80::{}<Cfg>(lp)", kind_name(s.kind)), 0};
    case Kind::BlockStateBlocks: {
      const std::string& dt = s.buffer_dtypes.at(s.blocks_buffer);
      const char* t = dt == "bool" || dt == "uint8" ? "unsigned char"
                      : dt == "int8"                ? "signed char"
                      : dt == "int16"               ? "short"
                      : dt == "int32"               ? "int"
                      : dt == "int64"               ? "long long"
                                                    : nullptr;
      if (!t) throw ir::GraphError("codegen: a block tensor of " + dt + " (bool or int expected)");
      return {"common/block_state.h", "",
              fmt::format("ae::block_state_from_blocks<{}, ae::BlockTensor<{}, {}, {}, {}, {}, {}, "
                          "{}>>(p, va, bs)",
                          layout, t, s.blocks_buffer, s.blocks_q, s.blocks_k, s.blocks_by_batch,
                          s.blocks_head_div, s.blocks_codes),
              0};
    }
  }
  throw ir::GraphError("codegen: unknown kernel kind");
}

}  // namespace

std::string instantiate(const ir::Variant* variant, const KernelSpec& s) {
  if (s.uses_variant() && !variant)
    throw ir::GraphError(fmt::format("codegen: {} needs a variant", s.describe()));
  const Template t = template_of(s);
  std::string src;
  auto out = std::back_inserter(src);
  fmt::format_to(out, "// attention_engine kernel: {}\n", s.describe());
  if (s.trust_v) src += "#define AE_CHECK_V 0\n";
  if (s.mask_load_mode >= 0) fmt::format_to(out, "#define AE_MASK_LOADS {}\n", s.mask_load_mode);
  if (s.pool_block > 0) fmt::format_to(out, "#define AE_POOL_BLOCK {}\n", s.pool_block);
  if (s.key_halves) src += "#define AE_KEY_HALVES 1\n";
  fmt::format_to(out, "#include \"{}\"\n", t.header);
  if (s.uses_variant()) {
    src += "#include \"common/variant_support.h\"\n\nnamespace {\n\n";
    src += emit_variant(*variant, s.buffer_dtypes, s.buffer_grads,
                        s.kind == Kind::Backward && s.grad_sink == GradSink::Shared,
                        s.plain_loads);
    src += "\n}  // namespace\n";
  }
  src += "\n";
  if (!t.config.empty()) fmt::format_to(out, "using Cfg = {};\n", t.config);
  fmt::format_to(out,
                 "extern \"C\" __global__ void __launch_bounds__({}{}) {}({}) {{\n  {};\n}}\n",
                 s.threads(), t.second_bound > 0 ? fmt::format(", {}", t.second_bound) : "",
                 s.entry(), parameter_list(abi_of(s)),
                 t.call);
  return src;
}

}  // namespace ae::codegen
