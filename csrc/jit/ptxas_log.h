// Reads a kernel's resource use from the "ptxas info" lines that -Xptxas=-v adds to the log.
#pragma once
#include <string>

#include "jit/compiler.h"

namespace ae::jit {

// Figures of the entry function `kernel` (its lowered name). When the log names no such
// entry and holds exactly one, that one's; otherwise all -1.
KernelFigures parse_ptxas_log(const std::string& log, const std::string& kernel);

}  // namespace ae::jit
