// Spill-driven choice among compile options: kernels at the 255-register edge may spill under
// one set of ptxas options and fit under another (same source, same launch shape).
#pragma once
#include <string>
#include <vector>

#include "jit/kernel_cache.h"

namespace ae::jit {

// Gets `request` from the cache (memory, disk or compile). When the kernel spills, also gets
// it with each of `alternatives` in turn (each replaces request.options, and is cached under
// its own key): returns the first that does not spill, else the one that spills least.
// Figures unknown (no ptxas -v lines in the log): the request's kernel is kept as it is, and
// an alternative's is never taken.
KernelPtr get_least_spilling(KernelCache& cache, CompileRequest request,
                             const std::vector<std::vector<std::string>>& alternatives);

}  // namespace ae::jit
