#include "jit/spill_fallback.h"

#include <algorithm>

namespace ae::jit {
namespace {

bool known(const KernelPtr& k) {
  const KernelFigures& f = k->result.figures;
  return f.spill_stores >= 0 && f.spill_loads >= 0;
}
// One measure for figures from ptxas's log and from the cubin (where the frame stands for
// both spill figures): the largest of them, which is the stack frame in both.
int spilled_bytes(const KernelPtr& k) {
  const KernelFigures& f = k->result.figures;
  return std::max({f.stack_frame, f.spill_stores, f.spill_loads});
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
