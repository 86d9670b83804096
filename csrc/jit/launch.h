// Loading a compiled kernel onto a device and launching it on the caller's stream: CUDA
// driver API (cuLaunchKernelEx, clusters, > 48 KB dynamic shared memory) or HIP modules.
#pragma once
#include <string>

#include "jit/kernel_cache.h"

namespace ae::jit {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

struct LaunchConfig {
  Dim3 grid, block, cluster;    // cluster: thread-block cluster (sm_90+), {1,1,1} = none
  unsigned dynamic_smem = 0;    // bytes; above 48 KB the kernel's limit is raised first
  void* stream = nullptr;       // CUstream / hipStream_t (e.g. torch's cuda_stream); null = default
  int device = -1;              // -1: the device of the current context (else 0)
};

// "kernel 'ae_fwd' (sm_90a) grid=(8,1,1) block=(128,1,1) smem=65536 cluster=(2,1,1)
//  stream=0x... device=0": every launch error names it.
std::string describe_launch(const CompiledKernel& kernel, const LaunchConfig& config);

// The kernel's function handle on `device`, loading its module there on first use
// (into the primary context on CUDA). Cheap after the first call: one atomic load.
void* kernel_function(const CompiledKernel& kernel, int device);

// args: one pointer per kernel parameter, pointing at the value (as cuLaunchKernel wants).
// Throws JitError naming the kernel and configuration when the driver refuses.
void launch_kernel(const CompiledKernel& kernel, const LaunchConfig& config, void** args);

}  // namespace ae::jit
