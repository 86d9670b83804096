#include "jit/hip_driver.h"

#include <cstdlib>

#include "fmt/format.h"

namespace ae::jit {
namespace {

std::unique_ptr<HipDriver> load_hip() {
  auto d = std::make_unique<HipDriver>();
  std::vector<std::string> dirs;
  if (const char* root = std::getenv("ROCM_PATH")) dirs.push_back(std::string(root) + "/lib");
  dirs.push_back("/opt/rocm/lib");
  d->lib = DynLib::open("the HIP runtime (libamdhip64)", "AE_LIBAMDHIP_PATH",
                        {"libamdhip64.so", "libamdhip64.so.7", "libamdhip64.so.6",
                         "libamdhip64.so.5"},
                        dirs);
  const DynLib& l = d->lib;
  l.bind(d->SetDevice, "hipSetDevice");
  l.bind(d->GetDevice, "hipGetDevice");
  l.bind(d->ModuleLoadData, "hipModuleLoadData");
  l.bind(d->ModuleGetFunction, "hipModuleGetFunction");
  l.bind(d->ModuleLaunchKernel, "hipModuleLaunchKernel");
  l.bind(d->GetErrorName, "hipGetErrorName");
  l.bind(d->GetErrorString, "hipGetErrorString");
  l.bind(d->DeviceGetAttribute, "hipDeviceGetAttribute");
  l.bind(d->GetDeviceProperties, "hipGetDevicePropertiesR0600", /*optional=*/true);
  if (!d->GetDeviceProperties) l.bind(d->GetDeviceProperties, "hipGetDeviceProperties");
  return d;
}

}  // namespace

const HipDriver& hip_driver() {
  static LazyApi<HipDriver> api;
  return api.get(load_hip);
}

std::string hip_error_text(hipError e) {
  const HipDriver& d = hip_driver();
  return fmt::format("{} ({})", d.GetErrorName(e), d.GetErrorString(e));
}

}  // namespace ae::jit
