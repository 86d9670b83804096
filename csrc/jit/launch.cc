#include "jit/launch.h"

#include "fmt/format.h"
#include "jit/cuda_driver.h"
#include "jit/errors.h"
#include "jit/hip_driver.h"

namespace ae::jit {
namespace {

constexpr unsigned kDefaultSmemLimit = 48 * 1024;  // beyond it CUDA wants an opt-in per kernel

[[noreturn]] void fail(const CompiledKernel& k, const LaunchConfig& c, const std::string& why) {
  throw JitError(fmt::format("attention_engine: launch of {} failed: {}", describe_launch(k, c),
                             why));
}

void* load_cuda_function(const CompiledKernel& k, int device) {
  const CudaDriver& d = cuda_driver();
  cuda_make_current(device);
  std::lock_guard<std::mutex> lock(k.load_mutex);
  if (void* f = k.functions[device].load(std::memory_order_acquire)) return f;
  CUmodule module = nullptr;
  CUfunction f = nullptr;
  CUresult r = d.ModuleLoadData(&module, k.result.binary.data());
  if (r == 0) r = d.ModuleGetFunction(&f, module, k.result.lowered_name.c_str());
  if (r != 0)
    throw JitError(fmt::format(
        "attention_engine: cannot load kernel '{}' ({}) on CUDA device {}: {}",
        k.result.lowered_name, k.result.arch, device, cuda_error_text(r)));
  k.functions[device].store(f, std::memory_order_release);
  return f;
}

void* load_hip_function(const CompiledKernel& k, int device) {
  const HipDriver& d = hip_driver();
  std::lock_guard<std::mutex> lock(k.load_mutex);
  if (void* f = k.functions[device].load(std::memory_order_acquire)) return f;
  int current = -1;
  d.GetDevice(&current);
  hipError e = current == device ? 0 : d.SetDevice(device);
  hipModule module = nullptr;
  hipFunction f = nullptr;
  if (e == 0) e = d.ModuleLoadData(&module, k.result.binary.data());
  if (e == 0) e = d.ModuleGetFunction(&f, module, k.result.lowered_name.c_str());
  if (current >= 0 && current != device) d.SetDevice(current);
  if (e != 0)
    throw JitError(fmt::format("attention_engine: cannot load kernel '{}' ({}) on HIP device {}: {}",
                               k.result.lowered_name, k.result.arch, device, hip_error_text(e)));
  k.functions[device].store(f, std::memory_order_release);
  return f;
}

void launch_cuda(const CompiledKernel& k, LaunchConfig c, void** args) {
  const CudaDriver& d = cuda_driver();
  if (c.device < 0) c.device = std::max(cuda_current_device(), 0);
  if (c.device >= kMaxDevices) fail(k, c, "bad device index");
  cuda_make_current(c.device);
  CUfunction f = kernel_function(k, c.device);
  if (c.dynamic_smem > kDefaultSmemLimit &&
      int(c.dynamic_smem) > k.dynamic_smem_set[c.device].load(std::memory_order_relaxed)) {
    CUresult r = d.FuncSetAttribute(f, kCuFuncAttrMaxDynamicSharedBytes, int(c.dynamic_smem));
    if (r != 0) fail(k, c, "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES): " + cuda_error_text(r));
    k.dynamic_smem_set[c.device].store(int(c.dynamic_smem), std::memory_order_relaxed);
  }
  unsigned cluster = c.cluster.x * c.cluster.y * c.cluster.z;
  CUresult r;
  if (cluster == 1 || !d.LaunchKernelEx) {
    if (cluster != 1) fail(k, c, "this CUDA driver has no cuLaunchKernelEx (needed for clusters)");
    r = d.LaunchKernel(f, c.grid.x, c.grid.y, c.grid.z, c.block.x, c.block.y, c.block.z,
                       c.dynamic_smem, c.stream, args, nullptr);
  } else {
    if (cluster > 8) d.FuncSetAttribute(f, kCuFuncAttrNonPortableCluster, 1);  // up to 16 on H100
    CuLaunchAttribute attr{};
    attr.id = kCuLaunchAttrClusterDimension;
    attr.value.cluster_dim = {c.cluster.x, c.cluster.y, c.cluster.z};
    CuLaunchConfig lc{c.grid.x,  c.grid.y,  c.grid.z,       c.block.x, c.block.y,
                      c.block.z, c.dynamic_smem, c.stream, &attr,     1};
    r = d.LaunchKernelEx(&lc, f, args, nullptr);
  }
  if (r != 0) fail(k, c, cuda_error_text(r));
}

void launch_hip(const CompiledKernel& k, LaunchConfig c, void** args) {
  const HipDriver& d = hip_driver();
  if (c.cluster.x * c.cluster.y * c.cluster.z != 1) fail(k, c, "clusters are CUDA-only");
  if (c.device < 0 && d.GetDevice(&c.device) != 0) c.device = 0;
  if (c.device >= kMaxDevices) fail(k, c, "bad device index");
  hipFunction f = kernel_function(k, c.device);
  int current = -1;
  d.GetDevice(&current);
  if (current != c.device) d.SetDevice(c.device);
  hipError e = d.ModuleLaunchKernel(f, c.grid.x, c.grid.y, c.grid.z, c.block.x, c.block.y,
                                    c.block.z, c.dynamic_smem, c.stream, args, nullptr);
  if (current >= 0 && current != c.device) d.SetDevice(current);
  if (e != 0) fail(k, c, hip_error_text(e));
}

}  // namespace

std::string describe_launch(const CompiledKernel& k, const LaunchConfig& c) {
  return fmt::format(
      "kernel '{}' ({}) grid=({},{},{}) block=({},{},{}) smem={} cluster=({},{},{}) "
      "stream={} device={}",
      k.result.lowered_name, k.result.arch, c.grid.x, c.grid.y, c.grid.z, c.block.x, c.block.y,
      c.block.z, c.dynamic_smem, c.cluster.x, c.cluster.y, c.cluster.z,
      fmt::ptr(c.stream), c.device);
}

void* kernel_function(const CompiledKernel& k, int device) {
  if (device < 0 || device >= kMaxDevices)
    throw JitError(fmt::format("attention_engine: bad device index {}", device));
  if (void* f = k.functions[device].load(std::memory_order_acquire)) return f;
  if (k.result.lowered_name.empty())
    throw JitError("attention_engine: kernel compiled without a name expression; cannot load it");
  return k.vendor == Vendor::kNvidia ? load_cuda_function(k, device)
                                     : load_hip_function(k, device);
}

void launch_kernel(const CompiledKernel& k, const LaunchConfig& c, void** args) {
  auto zero = [](const Dim3& d) { return d.x == 0 || d.y == 0 || d.z == 0; };
  if (zero(c.grid) || zero(c.block) || zero(c.cluster)) fail(k, c, "a dimension is 0");
  if (uint64_t(c.block.x) * c.block.y * c.block.z > 1024) fail(k, c, "more than 1024 threads per block");
  if (c.grid.x % c.cluster.x || c.grid.y % c.cluster.y || c.grid.z % c.cluster.z)
    fail(k, c, "the grid is not a multiple of the cluster");
  if (k.vendor == Vendor::kNvidia) launch_cuda(k, c, args);
  else launch_hip(k, c, args);
}

}  // namespace ae::jit
