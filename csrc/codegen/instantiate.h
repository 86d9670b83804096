// A KernelSpec (and, for kernels generated from a variant, the variant) -> the translation
// unit NVRTC / hipRTC compiles: the template's header, the generated Variant struct, and one
// extern "C" entry whose parameters are the spec's ABI (kernel_abi.h).
#pragma once

#include <string>

#include "codegen/kernel_spec.h"
#include "ir/variant.h"

namespace ae::codegen {

// variant: required when spec.uses_variant(), ignored (may be null) otherwise.
std::string instantiate(const ir::Variant* variant, const KernelSpec& spec);

}  // namespace ae::codegen
