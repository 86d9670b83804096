#include "jit/entry_check.h"

#include <cctype>

#include "fmt/format.h"

namespace ae::jit {
namespace {

// A plain C identifier: an extern "C" kernel, whose symbol is its name.
bool is_identifier(const std::string& s) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  return true;
}

bool in_range(int v, int lo, int hi) { return v >= lo && v <= hi; }

}  // namespace

std::string entry_mismatch(const CompileRequest& req, const CompileResult& r) {
  if (r.arch != req.arch) return fmt::format("arch {} for a request for {}", r.arch, req.arch);
  if (r.threads != req.threads)
    return fmt::format("{} threads for a request for {}", r.threads, req.threads);
  if (r.lowered_name.empty()) return "no kernel name";
  if (is_identifier(req.kernel) && r.lowered_name != req.kernel)
    return fmt::format("kernel '{}' for a request for '{}'", r.lowered_name, req.kernel);
  if (!is_identifier(req.kernel) && r.lowered_name.rfind("_Z", 0) != 0)
    return fmt::format("kernel '{}' is not a C++ name for '{}'", r.lowered_name, req.kernel);
  if (r.binary.empty()) return "no binary";
  const KernelFigures& f = r.figures;
  if (!in_range(f.registers, -1, 1024) || !in_range(f.smem_bytes, -1, 1 << 20) ||
      !in_range(f.spill_stores, -1, 1 << 30) || !in_range(f.spill_loads, -1, 1 << 30) ||
      !in_range(f.stack_frame, -1, 1 << 30))
    return "resource figures out of range";
  return "";
}

}  // namespace ae::jit
