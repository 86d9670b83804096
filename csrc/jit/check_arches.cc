#include "jit/check_arches.h"

#include "jit/errors.h"

namespace ae::jit {

std::vector<std::string> default_check_arches() { return {"sm_80", "sm_90a", "gfx90a"}; }

std::vector<ArchReport> compile_for_arches(const CompileRequest& request,
                                           const std::vector<std::string>& arches,
                                           KernelCache* cache) {
  KernelCache& c = cache ? *cache : default_kernel_cache();
  std::vector<ArchReport> reports;
  for (const auto& arch : arches) {
    ArchReport r;
    r.arch = arch;
    CompileRequest req = request;
    req.arch = arch;
    try {
      KernelPtr k = c.get(req);
      r.ok = true;
      r.figures = k->result.figures;
      r.lowered_name = k->result.lowered_name;
      r.log = k->result.log;
      r.from_disk = k->from_disk;
    } catch (const JitError& e) {
      r.error = e.what();
    }
    reports.push_back(std::move(r));
  }
  return reports;
}

}  // namespace ae::jit
