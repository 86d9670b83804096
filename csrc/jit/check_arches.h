// Compiles one source for several targets and reports each one's resource use: the CI check
// that every template instantiation compiles everywhere without spilling.
#pragma once
#include <string>
#include <vector>

#include "jit/compiler.h"
#include "jit/kernel_cache.h"

namespace ae::jit {

struct ArchReport {
  std::string arch;
  bool ok = false;
  KernelFigures figures;
  std::string lowered_name;
  std::string error;  // the CompileError / JitError text when !ok
  std::string log;    // the compiler's log when ok (where the figures come from)
  bool from_disk = false;
};

std::vector<std::string> default_check_arches();  // sm_80, sm_90a, gfx90a

// request.arch is ignored: each arch in turn. Goes through `cache` (default: the process
// cache), so a second run is cheap. Never throws for a failed compile; see ArchReport.
std::vector<ArchReport> compile_for_arches(const CompileRequest& request,
                                           const std::vector<std::string>& arches,
                                           KernelCache* cache = nullptr);

}  // namespace ae::jit
