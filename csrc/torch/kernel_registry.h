// Compiled kernels for (variant, KernelSpec): generated, compiled and cached through the JIT
// on first use, then found in a per-process map by one string lookup. Also the block-state
// tables of masks, which are cached when the mask reads no captured tensor.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "codegen/kernel_spec.h"
#include "codegen/row_passes.h"
#include "jit/kernel_cache.h"

namespace ae::torch_ops {

jit::KernelPtr get_kernel(const ir::Variant& variant, const codegen::KernelSpec& spec);

// The backward's row passes for an arch ("sm_90a", ...): the same for every variant.
jit::KernelPtr get_row_pass(codegen::RowPass pass, bool bf16, const std::string& arch);

// Drops the in-process kernel and block-state caches (the disk cache stays).
void clear_kernel_caches();

// The arch of a CUDA device for the mma.sync templates: "sm_80", "sm_86", "sm_90a", ...
std::string sm80_arch_of(int device);

}  // namespace ae::torch_ops
