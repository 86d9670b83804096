// Reads a kernel's resource use from a cubin's .nv.info section: the fallback for when the
// compiler's log lacks ptxas's -v lines (the H200 machine's NVRTC omits them at random).
#pragma once
#include <string>

#include "jit/compiler.h"

namespace ae::jit {

// Registers and stack frame of entry function `kernel` (or of the only function described),
// from the EIATTR_REGCOUNT and EIATTR_FRAME_SIZE records. The frame is local memory; our
// kernels use it only for spills, so it stands for both spill figures (0: no spills). All -1
// when the bytes are not a 64-bit little-endian ELF, are malformed, or describe no such
// function.
KernelFigures figures_from_cubin(const std::string& cubin, const std::string& kernel);

}  // namespace ae::jit
