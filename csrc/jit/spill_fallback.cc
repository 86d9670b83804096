#include "jit/spill_fallback.h"

#include <climits>

namespace ae::jit {
namespace {

int spilled_bytes(const KernelPtr& k) {
  const KernelFigures& f = k->result.figures;
  return f.spill_stores < 0 || f.spill_loads < 0 ? INT_MAX : f.spill_stores + f.spill_loads;
}

}  // namespace

KernelPtr get_least_spilling(KernelCache& cache, CompileRequest request,
                             const std::vector<std::vector<std::string>>& alternatives) {
  KernelPtr best = cache.get(request);
  for (const auto& options : alternatives) {
    if (spilled_bytes(best) == 0) break;
    request.options = options;
    KernelPtr other = cache.get(request);
    if (spilled_bytes(other) < spilled_bytes(best)) best = other;
  }
  return best;
}

}  // namespace ae::jit
