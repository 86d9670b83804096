#include "torch/kernel_registry.h"

#include <mutex>
#include <unordered_map>
#include <utility>

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

// The kernel under `key` from the in-process map, else make() (compile or disk cache) and
// remember it.
template <class Make>
jit::KernelPtr find_or_make(const std::string& key, Make make) {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = kernels().find(key);
    if (it != kernels().end()) return it->second;
  }
  jit::KernelPtr k = make();
  std::lock_guard<std::mutex> lock(g_mutex);
  return kernels().emplace(key, k).first->second;
}

}  // namespace

jit::KernelPtr get_kernel(const ir::Variant& variant, const codegen::KernelSpec& spec) {
  return find_or_make(key_of(variant, spec), [&] {
    jit::CompileRequest req;
    req.source = codegen::instantiate(variant, spec);
    req.kernel = spec.entry();
    req.options = spec.compile_options();
    req.arch = spec.arch;
    req.threads = spec.kind == codegen::Kind::BlockState ? 128 : spec.threads();
    req.file_name = "ae_" + variant.key + ".cu";
    // A spill costs speed, never correctness; usually another register-usage level avoids it.
    return jit::get_least_spilling(jit::default_kernel_cache(), req, spec.fallback_options());
  });
}

jit::KernelPtr get_row_pass(codegen::RowPass pass, bool bf16, const std::string& arch) {
  // Keyed without generating the source: this runs twice per backward call.
  const std::string key = std::string("row pass ") + (pass == codegen::RowPass::Prep ? "prep" : "dq") +
                          (bf16 ? " bf16 " : " fp16 ") + arch;
  return find_or_make(key, [&] {
    codegen::RowPassSource src = codegen::row_pass_source(pass, bf16);
    jit::CompileRequest req;
    req.source = std::move(src.source);
    req.kernel = src.entry;
    req.arch = arch;
    req.threads = codegen::kRowPassThreads;
    req.file_name = src.entry + ".cu";
    return jit::default_kernel_cache().get(req);
  });
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
