#include "runner/kernel_registry.h"

#include <mutex>
#include <unordered_map>

#include "codegen/instantiate.h"
#include "jit/spill_fallback.h"

namespace ae::runner {
namespace {

std::mutex g_mutex;
std::unordered_map<std::string, jit::KernelPtr>& kernels() {
  static auto* m = new std::unordered_map<std::string, jit::KernelPtr>();
  return *m;
}

// Keyed without generating the source: this runs for every launch.
std::string key_of(const ir::Variant* v, const codegen::KernelSpec& s) {
  std::string k = s.uses_variant() ? v->key + "|" + s.describe() : s.describe();
  for (const auto& d : s.buffer_dtypes) k += "|" + d;
  return k;
}

}  // namespace

jit::KernelPtr get_kernel(const ir::Variant* variant, const codegen::KernelSpec& spec) {
  const std::string key = key_of(variant, spec);
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = kernels().find(key);
    if (it != kernels().end()) return it->second;
  }
  jit::CompileRequest req;
  req.source = codegen::instantiate(variant, spec);
  req.kernel = spec.entry();
  req.options = spec.compile_options();
  req.arch = spec.arch;
  req.threads = spec.threads();
  req.file_name = spec.uses_variant() ? "ae_" + variant->key + ".cu" : spec.entry() + ".cu";
  // A spill costs speed, never correctness; usually another register-usage level avoids it.
  jit::KernelPtr k =
      jit::get_least_spilling(jit::default_kernel_cache(), req, spec.fallback_options());
  std::lock_guard<std::mutex> lock(g_mutex);
  return kernels().emplace(key, k).first->second;
}

void clear_kernels() {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    kernels().clear();
  }
  jit::default_kernel_cache().clear_memory();
}

}  // namespace ae::runner
