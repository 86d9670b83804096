#include "jit/spill_fallback.h"

namespace ae::jit {
namespace {

bool known(const KernelPtr& k) {
  const KernelFigures& f = k->result.figures;
  return f.spill_stores >= 0 && f.spill_loads >= 0;
}
int spilled_bytes(const KernelPtr& k) {
  return k->result.figures.spill_stores + k->result.figures.spill_loads;
}

}  // namespace

KernelPtr get_least_spilling(KernelCache& cache, CompileRequest request,
                             const std::vector<std::vector<std::string>>& alternatives) {
  KernelPtr best = cache.get(request);
  if (!known(best)) return best;  // no evidence of a spill: the table's choice stands
  for (const auto& options : alternatives) {
    if (spilled_bytes(best) == 0) break;
    request.options = options;
    KernelPtr other = cache.get(request);
    if (known(other) && spilled_bytes(other) < spilled_bytes(best)) best = other;
  }
  return best;
}

}  // namespace ae::jit
