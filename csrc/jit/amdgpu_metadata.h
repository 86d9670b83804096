// Reads a kernel's resource use from an AMDGPU code object: the NT_AMDGPU_METADATA note
// (MessagePack) that every HSA code object carries. hipRTC's log has no such figures.
#pragma once
#include <string>

#include "jit/compiler.h"

namespace ae::jit {

// Figures of `kernel` (its .name in the metadata); when absent and the object holds one
// kernel, that one's; all -1 when the object cannot be read.
KernelFigures parse_amdgpu_code_object(const std::string& elf, const std::string& kernel);

}  // namespace ae::jit
