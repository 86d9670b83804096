// Spill-driven choice among compile options: kernels at the 255-register edge may spill under
// one set of ptxas options and fit under another (same source, same launch shape).
#pragma once
#include <string>
#include <vector>

#include "jit/kernel_cache.h"

namespace ae::jit {

// Gets `request` from the cache (memory, disk or compile). When the kernel spills, also gets
// it with each of `alternatives` in turn (each replaces request.options, and is cached under
// its own key): returns the first that does not spill, else the one that spills least. A
// kernel whose figures are unknown (no ptxas log) counts as spilling most.
KernelPtr get_least_spilling(KernelCache& cache, CompileRequest request,
                             const std::vector<std::vector<std::string>>& alternatives);

}  // namespace ae::jit
