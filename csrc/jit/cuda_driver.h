// The few CUDA driver API functions the JIT calls, from libcuda.so.1 opened with dlopen on
// first use. Types are declared here: no CUDA headers are needed to build.
#pragma once
#include <cstddef>
#include <string>

#include "jit/dynlib.h"

namespace ae::jit {

using CUresult = int;  // 0 == CUDA_SUCCESS
using CUdevice = int;
using CUcontext = void*;
using CUmodule = void*;
using CUfunction = void*;
using CUstream = void*;

constexpr int kCuFuncAttrMaxDynamicSharedBytes = 8;   // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
constexpr int kCuFuncAttrNonPortableCluster = 14;     // ..._NON_PORTABLE_CLUSTER_SIZE_ALLOWED
constexpr int kCuLaunchAttrClusterDimension = 4;      // CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION

// Mirrors CUlaunchAttribute / CUlaunchConfig of cuda.h (stable ABI since CUDA 11.8).
struct CuLaunchAttribute {
  int id;
  char pad[4];
  union {
    char bytes[64];
    struct {
      unsigned x, y, z;
    } cluster_dim;
  } value;
};
struct CuLaunchConfig {
  unsigned grid_x, grid_y, grid_z, block_x, block_y, block_z, shared_bytes;
  CUstream stream;
  CuLaunchAttribute* attrs;
  unsigned num_attrs;
};

struct CudaDriver {
  DynLib lib;
  CUresult (*Init)(unsigned);
  CUresult (*DriverGetVersion)(int*);
  CUresult (*DeviceGet)(CUdevice*, int);
  CUresult (*DeviceGetAttribute)(int*, int, CUdevice);
  CUresult (*DevicePrimaryCtxRetain)(CUcontext*, CUdevice);
  CUresult (*CtxGetCurrent)(CUcontext*);
  CUresult (*CtxSetCurrent)(CUcontext);
  CUresult (*CtxGetDevice)(CUdevice*);
  CUresult (*ModuleLoadData)(CUmodule*, const void*);
  CUresult (*ModuleGetFunction)(CUfunction*, CUmodule, const char*);
  CUresult (*FuncSetAttribute)(CUfunction, int, int);
  CUresult (*LaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                           unsigned, unsigned, CUstream, void**, void**);
  CUresult (*LaunchKernelEx)(const CuLaunchConfig*, CUfunction, void**, void**);  // may be null
  // cuTensorMapEncodeTiled(map, dtype, rank, address, dims, byte strides, box, element
  // strides, interleave, swizzle, l2 promotion, oob fill); null on drivers before CUDA 12.
  CUresult (*TensorMapEncodeTiled)(void*, int, unsigned, void*, const unsigned long long*,
                                   const unsigned long long*, const unsigned*, const unsigned*, int,
                                   int, int, int);
  CUresult (*DeviceGetName)(char*, int, CUdevice);           // may be null
  CUresult (*StreamIsCapturing)(CUstream, int*);             // may be null (0: not capturing)
  CUresult (*GetErrorName)(CUresult, const char**);
  CUresult (*GetErrorString)(CUresult, const char**);
};

// Loads libcuda.so.1 (or $AE_LIBCUDA_PATH) and calls cuInit once; throws JitError.
const CudaDriver& cuda_driver();

// "CUDA_ERROR_INVALID_VALUE (invalid argument)".
std::string cuda_error_text(CUresult r);

// Compute capability, opt-in shared memory per block, SMs and L2 bytes of a device (cached
// per device).
struct CudaDeviceInfo {
  int major = 0, minor = 0, smem_optin = 0, multiprocessors = 0, l2_bytes = 0;
};
const CudaDeviceInfo& cuda_device_info(int device);
// The device's name ("NVIDIA H200"), or "CUDA device N" where the driver cannot say.
std::string cuda_device_name(int device);
// Whether work on `stream` is being captured into a CUDA graph now (nothing may synchronize).
bool cuda_stream_capturing(void* stream);
// Makes the device's primary context (the one PyTorch uses) current on this thread.
void cuda_make_current(int device);
// The device of the current context, or -1 when none is current.
int cuda_current_device();

}  // namespace ae::jit
