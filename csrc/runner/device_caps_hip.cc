#include "runner/device_caps_hip.h"

#include <fmt/format.h>

#include <cstring>
#include <mutex>
#include <vector>

#include "jit/errors.h"
#include "jit/hip_driver.h"
#include "jit/kernel_cache.h"  // kMaxDevices

namespace ae::runner {
namespace {

// hipDeviceAttribute_t values (hip_runtime_api.h, ROCm 5.2; the CUDA-compatible block).
constexpr int kAttrL2CacheSize = 19, kAttrMultiprocessorCount = 63,
              kAttrMaxSharedMemoryPerBlock = 74, kAttrWarpSize = 87;
constexpr size_t kNameField = 256;        // hipDeviceProp_t::name, the struct's first field
constexpr size_t kPropsBuffer = 16384;    // larger than any release's hipDeviceProp_t

bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

}  // namespace

std::string gcn_target(const std::string& arch_name) {
  const std::string target = arch_name.substr(0, arch_name.find(':'));
  if (target.size() < 4 || target.compare(0, 3, "gfx") != 0) return {};
  for (size_t i = 3; i < target.size(); ++i)
    if (!is_hex(target[i])) return {};
  return target;
}

std::string find_gcn_arch_name(const char* props, size_t n) {
  for (size_t at = kNameField; at + 4 < n; ++at) {
    if (std::memcmp(props + at, "gfx", 3) != 0 || (at > 0 && props[at - 1] != '\0')) continue;
    const size_t len = strnlen(props + at, n - at);
    if (at + len == n) return {};  // not NUL-terminated within the buffer
    std::string s(props + at, len);
    if (!gcn_target(s).empty()) return s;
  }
  return {};
}

plan::DeviceCaps hip_device_caps(int device) {
  static std::mutex m;
  static std::vector<plan::DeviceCaps> cache(jit::kMaxDevices);
  if (device < 0 || device >= jit::kMaxDevices)
    throw jit::JitError(fmt::format("attention_engine: bad HIP device index {}", device));
  std::lock_guard<std::mutex> lock(m);
  plan::DeviceCaps& c = cache[device];
  if (!c.gfx.empty()) return c;
  const jit::HipDriver& d = jit::hip_driver();
  std::vector<char> props(kPropsBuffer, '\0');
  if (jit::hipError e = d.GetDeviceProperties(props.data(), device); e != 0)
    throw jit::JitError(fmt::format("attention_engine: hipGetDeviceProperties({}): {}", device,
                                    jit::hip_error_text(e)));
  const std::string arch_name = find_gcn_arch_name(props.data(), props.size());
  auto attr = [&](int a) {
    int v = 0;
    return d.DeviceGetAttribute(&v, a, device) == 0 ? v : 0;
  };
  c.name = std::string(props.data(), strnlen(props.data(), kNameField));
  c.vendor = jit::Vendor::kAmd;
  c.smem_per_block = attr(kAttrMaxSharedMemoryPerBlock);
  c.multiprocessors = attr(kAttrMultiprocessorCount);
  c.l2_bytes = attr(kAttrL2CacheSize);
  c.warp_size = attr(kAttrWarpSize);
  // An unreadable target leaves gfx "unknown" (the planner refuses it by name, not silently).
  c.gfx = arch_name.empty() ? "unknown" : gcn_target(arch_name);
  // The attribute numbers are ROCm 5.2's; should a release renumber them, implausible answers
  // fall back to what every gfx9 data-center part has (64 KB of LDS per block, wave64), and
  // an unknown CU count plans no split-KV.
  if (c.smem_per_block < 16 * 1024 || c.smem_per_block > 1024 * 1024) c.smem_per_block = 64 * 1024;
  if (c.warp_size != 32 && c.warp_size != 64) c.warp_size = 64;
  if (c.multiprocessors < 0 || c.multiprocessors > 4096) c.multiprocessors = 0;
  if (c.l2_bytes < 0) c.l2_bytes = 0;
  return c;
}

}  // namespace ae::runner
