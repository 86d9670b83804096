#include "jit/cuda_driver.h"

#include <array>
#include <atomic>
#include <mutex>

#include "fmt/format.h"
#include "jit/errors.h"
#include "jit/kernel_cache.h"

namespace ae::jit {
namespace {

std::unique_ptr<CudaDriver> load_cuda() {
  auto d = std::make_unique<CudaDriver>();
  d->lib = DynLib::open("the CUDA driver (libcuda)", "AE_LIBCUDA_PATH",
                        {"libcuda.so.1", "libcuda.so"});
  const DynLib& l = d->lib;
  l.bind(d->Init, "cuInit");
  l.bind(d->DriverGetVersion, "cuDriverGetVersion");
  l.bind(d->DeviceGet, "cuDeviceGet");
  l.bind(d->DeviceGetAttribute, "cuDeviceGetAttribute");
  l.bind(d->DevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
  l.bind(d->CtxGetCurrent, "cuCtxGetCurrent");
  l.bind(d->CtxSetCurrent, "cuCtxSetCurrent");
  l.bind(d->CtxGetDevice, "cuCtxGetDevice");
  l.bind(d->ModuleLoadData, "cuModuleLoadData");
  l.bind(d->ModuleGetFunction, "cuModuleGetFunction");
  l.bind(d->FuncSetAttribute, "cuFuncSetAttribute");
  l.bind(d->LaunchKernel, "cuLaunchKernel");
  l.bind(d->LaunchKernelEx, "cuLaunchKernelEx", /*optional=*/true);  // CUDA >= 11.8
  l.bind(d->TensorMapEncodeTiled, "cuTensorMapEncodeTiled", /*optional=*/true);  // CUDA >= 12
  l.bind(d->DeviceGetName, "cuDeviceGetName", /*optional=*/true);
  l.bind(d->StreamIsCapturing, "cuStreamIsCapturing", /*optional=*/true);
  l.bind(d->GetErrorName, "cuGetErrorName");
  l.bind(d->GetErrorString, "cuGetErrorString");
  CUresult r = d->Init(0);
  if (r != 0) {
    const char* name = nullptr;
    d->GetErrorName(r, &name);
    throw JitError(fmt::format("attention_engine: cuInit failed ({}) with {}: no usable GPU?",
                               name ? name : std::to_string(r), d->lib.path()));
  }
  return d;
}

}  // namespace

const CudaDriver& cuda_driver() {
  static LazyApi<CudaDriver> api;
  return api.get(load_cuda);
}

std::string cuda_error_text(CUresult r) {
  const CudaDriver& d = cuda_driver();
  const char *name = nullptr, *text = nullptr;
  d.GetErrorName(r, &name);
  d.GetErrorString(r, &text);
  return fmt::format("{} ({})", name ? name : std::to_string(r), text ? text : "?");
}

const CudaDeviceInfo& cuda_device_info(int device) {
  if (device < 0 || device >= kMaxDevices)
    throw JitError(fmt::format("attention_engine: bad CUDA device index {}", device));
  static std::array<CudaDeviceInfo, kMaxDevices> infos{};
  static std::array<std::once_flag, kMaxDevices> once;
  std::call_once(once[device], [device] {
    const CudaDriver& d = cuda_driver();
    CUdevice dev = 0;
    CUresult r = d.DeviceGet(&dev, device);
    CudaDeviceInfo info;
    // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR, MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
    // MULTIPROCESSOR_COUNT, L2_CACHE_SIZE
    if (r == 0) r = d.DeviceGetAttribute(&info.major, 75, dev);
    if (r == 0) r = d.DeviceGetAttribute(&info.minor, 76, dev);
    if (r == 0) r = d.DeviceGetAttribute(&info.smem_optin, 97, dev);
    if (r == 0) r = d.DeviceGetAttribute(&info.multiprocessors, 16, dev);
    if (r == 0) r = d.DeviceGetAttribute(&info.l2_bytes, 38, dev);
    if (r != 0)
      throw JitError(fmt::format("attention_engine: cannot query CUDA device {}: {}", device,
                                 cuda_error_text(r)));
    infos[device] = info;
  });
  return infos[device];
}

std::string cuda_device_name(int device) {
  const CudaDriver& d = cuda_driver();
  char name[256] = {};
  CUdevice dev = 0;
  if (d.DeviceGetName && d.DeviceGet(&dev, device) == 0 && d.DeviceGetName(name, sizeof name - 1, dev) == 0)
    return name;
  return fmt::format("CUDA device {}", device);
}

bool cuda_stream_capturing(void* stream) {
  const CudaDriver& d = cuda_driver();
  int status = 0;  // CU_STREAM_CAPTURE_STATUS_NONE
  return d.StreamIsCapturing && d.StreamIsCapturing(stream, &status) == 0 && status != 0;
}

void cuda_make_current(int device) {
  if (device < 0 || device >= kMaxDevices)
    throw JitError(fmt::format("attention_engine: bad CUDA device index {}", device));
  const CudaDriver& d = cuda_driver();
  // Retained once per device and never released: torch keeps it alive anyway.
  static std::array<std::atomic<CUcontext>, kMaxDevices> primary{};
  CUcontext ctx = primary[device].load(std::memory_order_acquire);
  if (!ctx) {
    CUdevice dev = 0;
    CUresult r = d.DeviceGet(&dev, device);
    if (r == 0) r = d.DevicePrimaryCtxRetain(&ctx, dev);
    if (r != 0)
      throw JitError(fmt::format("attention_engine: cannot get the primary context of CUDA "
                                 "device {}: {}", device, cuda_error_text(r)));
    CUcontext expected = nullptr;
    if (!primary[device].compare_exchange_strong(expected, ctx)) ctx = expected;
  }
  CUcontext current = nullptr;
  d.CtxGetCurrent(&current);
  if (current != ctx) {
    CUresult r = d.CtxSetCurrent(ctx);
    if (r != 0)
      throw JitError(fmt::format("attention_engine: cuCtxSetCurrent for device {} failed: {}",
                                 device, cuda_error_text(r)));
  }
}

int cuda_current_device() {
  const CudaDriver& d = cuda_driver();
  CUcontext current = nullptr;
  if (d.CtxGetCurrent(&current) != 0 || !current) return -1;
  CUdevice dev = -1;
  return d.CtxGetDevice(&dev) == 0 ? dev : -1;
}

}  // namespace ae::jit
