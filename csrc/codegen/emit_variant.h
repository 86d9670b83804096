// Graph -> device code: the `Variant` struct a kernel template is instantiated with. Its
// members are the variant's score_mod (score), mask_mod (mask) and backward hook (grad: the
// derivative by the score, plus additions into the gradients of captured tensors through its
// `grads` sink, templates/common/variant_support.h), one C++ statement
// per graph node, named after the node (n7 is %7 of the graph text).
#pragma once

#include <string>
#include <vector>

#include "ir/variant.h"

namespace ae::codegen {

// Whether generated code can load a captured tensor of this torch dtype ("float32", "int64", ...).
bool has_kernel_load(const std::string& dtype);

// buffer_dtypes: the torch dtype name of each captured tensor at call time ("float32", ...).
// buffer_grads: which captured tensors the backward adds gradients into (empty: none).
// shared_grads: the additions go to a copy of those gradients in shared memory (SharedGrads),
// else to global memory (GlobalGrads). plain_loads: captured tensors through plain loads where
// no gradient atomics can alias them (custom normalizations' kernels always).
std::string emit_variant(const ir::Variant& variant, const std::vector<std::string>& buffer_dtypes,
                         const std::vector<bool>& buffer_grads = {}, bool shared_grads = false,
                         bool plain_loads = false);

}  // namespace ae::codegen
