#include "plan/device_caps.h"

#include <fmt/format.h>

namespace ae::plan {

std::string DeviceCaps::arch() const {
  if (vendor == jit::Vendor::kAmd) return gfx;
  return jit::nvidia_arch(major, minor, true);
}

std::string DeviceCaps::label() const {
  return vendor == jit::Vendor::kAmd ? fmt::format("{} ({})", name, gfx)
                                     : fmt::format("{} (sm_{}{})", name, major, minor);
}

namespace devices {

namespace {
DeviceCaps nvidia(const char* name, int major, int minor, int smem_kb, int sms, int l2_mb) {
  DeviceCaps c;
  c.name = name;
  c.major = major;
  c.minor = minor;
  c.smem_per_block = smem_kb * 1024;
  c.multiprocessors = sms;
  c.l2_bytes = static_cast<long long>(l2_mb) << 20;
  return c;
}
}  // namespace

DeviceCaps h100() { return nvidia("NVIDIA H100 80GB HBM3", 9, 0, 227, 132, 50); }
DeviceCaps h200() { return nvidia("NVIDIA H200", 9, 0, 227, 132, 50); }
DeviceCaps a100() { return nvidia("NVIDIA A100-SXM4-80GB", 8, 0, 163, 108, 40); }
DeviceCaps ada() { return nvidia("NVIDIA L4", 8, 9, 99, 58, 48); }
DeviceCaps mi250() {
  DeviceCaps c;
  c.name = "AMD Instinct MI250X";
  c.vendor = jit::Vendor::kAmd;
  c.gfx = "gfx90a";
  c.smem_per_block = 64 * 1024;
  c.multiprocessors = 110;
  c.l2_bytes = 8ll << 20;
  c.warp_size = 64;
  return c;
}

bool named(const std::string& name, DeviceCaps* out) {
  if (name == "h100") *out = h100();
  else if (name == "h200") *out = h200();
  else if (name == "a100") *out = a100();
  else if (name == "ada") *out = ada();
  else if (name == "mi250") *out = mi250();
  else return false;
  return true;
}

}  // namespace devices
}  // namespace ae::plan
