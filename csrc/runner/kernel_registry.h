// Compiled kernels for (variant, KernelSpec): generated, compiled and cached through the JIT
// on first use, then found in a per-process map by one string lookup.
#pragma once

#include "codegen/kernel_spec.h"
#include "ir/variant.h"
#include "jit/kernel_cache.h"

namespace ae::runner {

// variant: null for kernels that do not use one (KernelSpec::uses_variant).
jit::KernelPtr get_kernel(const ir::Variant* variant, const codegen::KernelSpec& spec);

// Drops the in-process kernels (the disk cache stays).
void clear_kernels();

}  // namespace ae::runner
