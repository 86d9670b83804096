#include "torch/kernel_registry.h"

#include <mutex>
#include <unordered_map>

#include "jit/compiler.h"
#include "jit/cuda_driver.h"
#include "jit/spill_fallback.h"

namespace ae::torch_ops {
namespace {

std::mutex g_mutex;
std::unordered_map<std::string, jit::KernelPtr>& kernels() {
  static auto* m = new std::unordered_map<std::string, jit::KernelPtr>();
  return *m;
}

std::string key_of(const ir::Variant& v, const codegen::KernelSpec& s) {
  std::string k = v.key + "|" + s.describe();
  for (const auto& d : s.buffer_dtypes) k += "|" + d;
  return k;
}

}  // namespace

jit::KernelPtr get_kernel(const ir::Variant& variant, const codegen::KernelSpec& spec) {
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
  req.threads = spec.kind == codegen::Kind::BlockState ? 128 : spec.threads();
  req.file_name = "ae_" + variant.key + ".cu";
  // A spill costs speed, never correctness; usually another register-usage level avoids it.
  jit::KernelPtr k =
      jit::get_least_spilling(jit::default_kernel_cache(), req, spec.fallback_options());
  std::lock_guard<std::mutex> lock(g_mutex);
  return kernels().emplace(key, k).first->second;
}

jit::KernelPtr get_row_pass(codegen::RowPass pass, bool bf16, const std::string& arch) {
  codegen::RowPassSource src = codegen::row_pass_source(pass, bf16);
  const std::string key = src.describe + "|" + arch;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = kernels().find(key);
    if (it != kernels().end()) return it->second;
  }
  jit::CompileRequest req;
  req.source = std::move(src.source);
  req.kernel = src.entry;
  req.arch = arch;
  req.threads = codegen::kRowPassThreads;
  req.file_name = src.entry + ".cu";
  jit::KernelPtr k = jit::default_kernel_cache().get(req);
  std::lock_guard<std::mutex> lock(g_mutex);
  return kernels().emplace(key, k).first->second;
}

void clear_kernel_caches() {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    kernels().clear();
  }
  jit::default_kernel_cache().clear_memory();
}

std::string sm80_arch_of(int device) {
  const jit::CudaDeviceInfo& info = jit::cuda_device_info(device);
  // Arch-specific ("sm_90a" on Hopper): the code CI's compile-all check builds and checks for
  // spills. ptxas allocates registers differently for sm_90 and sm_90a: at the 255-register
  // edge the plain backward spilled 8 bytes for one and not the other.
  return jit::nvidia_arch(info.major, info.minor, true);
}

}  // namespace ae::torch_ops
