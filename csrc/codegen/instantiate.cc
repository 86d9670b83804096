#include "codegen/instantiate.h"

#include <fmt/format.h>

#include <iterator>

#include "codegen/emit_variant.h"
#include "codegen/kernel_abi.h"
#include "ir/error.h"

namespace ae::codegen {
namespace {

// Which template a spec instantiates: its header, its config type (empty: none), the call
// the entry makes, and whether the entry promises one CTA per SM (__launch_bounds__'s second
// argument: the big templates, which take the whole register file).
struct Template {
  const char* header;
  std::string config;
  std::string call;
  bool one_per_sm;
};

const char* layout_type(Layout l) {
  switch (l) {
    case Layout::Dense: return "ae::DenseLayout";
  }
  return "?";
}

Template template_of(const KernelSpec& s) {
  const char* elem = s.bf16 ? "true" : "false";
  const char* layout = layout_type(s.layout);
  switch (s.kind) {
    case Kind::Forward:
      if (s.family == Family::Sm90)
        // Tensor maps are __grid_constant__: the kernel takes their addresses.
        return {"sm90/fwd.h",
                fmt::format("ae::sm90::FwdConfig<{}, {}, {}, {}, {}, {}, {}, {}, {}, {}>", s.d_qk,
                            s.d_v, s.block_n, s.stages, s.overlap, s.pingpong, elem, layout,
                            s.kv_split, s.persistent),
                "ae::sm90::attention_fwd<Cfg>(p, Variant{va}, &tq, &tk, &tv)", true};
      if (s.decode)  // up to 2 CTAs per SM where shared memory allows: no ", 1"
        return {"sm80/decode.h",
                fmt::format("ae::sm80::DecodeConfig<{}, {}, {}, {}, {}, {}, {}>", s.d_qk, s.d_v,
                            s.block_n, s.warps, elem, layout, s.kv_split),
                "ae::sm80::attention_decode<Cfg>(p, Variant{va})", false};
      return {"sm80/fwd.h",
              fmt::format("ae::sm80::FwdConfig<{}, {}, {}, {}, {}, {}, {}, {}>", s.d_qk, s.d_v,
                          s.block_n, s.warps, s.m_tiles, elem, layout, s.kv_split),
              "ae::sm80::attention_fwd<Cfg>(p, Variant{va})", true};
    case Kind::Backward:
      if (s.family == Family::Sm90)
        return {"sm90/bwd.h",
                fmt::format("ae::sm90::BwdConfig<{}, {}, {}, {}, {}>", s.d_qk, s.d_v, elem, layout,
                            s.deterministic),
                "ae::sm90::attention_bwd<Cfg>(p, Variant{va}, &tq, &tk, &tv, &tdo)", true};
      return {"sm80/bwd.h",
              fmt::format("ae::sm80::BwdConfig<{}, {}, {}, {}, {}, {}, {}>", s.d_qk, s.d_v,
                          s.block_n, s.stages, elem, layout, s.deterministic),
              "ae::sm80::attention_bwd<Cfg>(p, Variant{va})", true};
    case Kind::BlockState:
      return {"common/block_state.h", "", "ae::block_state(p, Variant{va}, bs)", false};
    case Kind::BwdPrep:
      return {"common/bwd_rows.h", "", fmt::format("ae::bwd_prep<{}>(rp)", elem), false};
    case Kind::BwdDq:
      return {"common/bwd_rows.h", "", fmt::format("ae::bwd_dq<{}>(rp)", elem), false};
    case Kind::BwdRowsCustom:
      return {"common/bwd_rows.h", "", "ae::bwd_rows_custom(rp, Variant{va})", false};
    case Kind::FwdCombine:
      return {"common/split_combine.h", "", fmt::format("ae::fwd_combine<{}, {}>(p)", elem, layout),
              false};
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
                 s.threads(), t.one_per_sm ? ", 1" : "", s.entry(), parameter_list(abi_of(s)),
                 t.call);
  return src;
}

}  // namespace ae::codegen
