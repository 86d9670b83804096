#include "codegen/kernel_abi.h"

#include <fmt/format.h>

namespace ae::codegen {

const KernelAbi& abi_of(const KernelSpec& s) {
  static const KernelAbi attn{{Arg::Attn, Arg::Variant}, false};
  static const KernelAbi tma{{Arg::Attn, Arg::Variant, Arg::TmaQ, Arg::TmaK, Arg::TmaV}, true};
  // (MLA decode: V is read from K's tiles.)
  static const KernelAbi tma_qk{{Arg::Attn, Arg::Variant, Arg::TmaQ, Arg::TmaK}, true};
  static const KernelAbi tma_bwd{
      {Arg::Attn, Arg::Variant, Arg::TmaQ, Arg::TmaK, Arg::TmaV, Arg::TmaDo}, true};
  static const KernelAbi block_states{{Arg::Attn, Arg::Variant, Arg::BlockStates}, false};
  static const KernelAbi rows{{Arg::Rows}, false};
  static const KernelAbi rows_variant{{Arg::Rows, Arg::Variant}, false};
  static const KernelAbi attn_only{{Arg::Attn}, false};
  static const KernelAbi linear{{Arg::Linear}, false};
  switch (s.kind) {
    case Kind::Forward: return s.family != Family::Sm90 ? attn : s.mla ? tma_qk : tma;
    case Kind::Backward: return s.family == Family::Sm90 ? tma_bwd : attn;
    case Kind::BlockState:
    case Kind::BlockStateBlocks: return block_states;
    case Kind::FwdCombine:
    case Kind::VCheck:
    case Kind::PoolMap: return attn_only;
    case Kind::BwdPrep:
    case Kind::BwdDq: return rows;
    case Kind::BwdRowsCustom: return rows_variant;
    case Kind::LinearStep:
    case Kind::LinearState:
    case Kind::LinearOut:
    case Kind::LinearDState:
    case Kind::LinearGrads: return linear;
  }
  return attn;
}

std::string parameter_list(const KernelAbi& abi) {
  std::string out;
  for (Arg a : abi.args) {
    const char* decl = "";
    switch (a) {
      case Arg::Attn: decl = "ae::AttnParams p"; break;
      case Arg::Variant: decl = "ae::VariantArgs va"; break;
      case Arg::TmaQ: decl = "ae::TmaDesc tq"; break;
      case Arg::TmaK: decl = "ae::TmaDesc tk"; break;
      case Arg::TmaV: decl = "ae::TmaDesc tv"; break;
      case Arg::TmaDo: decl = "ae::TmaDesc tdo"; break;
      case Arg::Rows: decl = "ae::BwdRowParams rp"; break;
      case Arg::BlockStates: decl = "ae::BlockStateParams bs"; break;
      case Arg::Linear: decl = "ae::LinearParams lp"; break;
    }
    out += fmt::format("{}const {}{}", out.empty() ? "" : ", ",
                       abi.grid_constant ? "__grid_constant__ " : "", decl);
  }
  return out;
}

}  // namespace ae::codegen
