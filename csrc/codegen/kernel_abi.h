// The arguments of each kernel, in order: the one description of a template's ABI. The
// generated extern "C" entry's parameter list is written from it (instantiate.cc) and the
// runner packs its argument array from it (csrc/runner), so the order exists once. Each
// argument is one of the plain structs of templates/common/params.h, passed by value.
#pragma once

#include <string>
#include <vector>

#include "codegen/kernel_spec.h"

namespace ae::codegen {

enum class Arg {
  Attn,         // ae::AttnParams p
  Variant,      // ae::VariantArgs va: the captured tensors
  TmaQ,         // ae::TmaDesc tq: TMA map of Q, boxes of block_m rows
  TmaK,         // ae::TmaDesc tk: of K, boxes of block_n rows
  TmaV,         // ae::TmaDesc tv: of V, likewise
  TmaDo,        // ae::TmaDesc tdo: of dO, boxes of block_m rows
  Rows,         // ae::BwdRowParams rp: the backward's row passes
  BlockStates,  // ae::BlockStateParams bs: the block-state table to fill
  Linear,       // ae::LinearParams lp: linear attention's kernels
};

struct KernelAbi {
  std::vector<Arg> args;
  // Parameters declared __grid_constant__ (kernels that take their addresses: TMA maps).
  bool grid_constant = false;
};

const KernelAbi& abi_of(const KernelSpec& spec);

// "const __grid_constant__ ae::AttnParams p, ..." for the extern "C" entry.
std::string parameter_list(const KernelAbi& abi);

}  // namespace ae::codegen
