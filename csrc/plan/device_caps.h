// What the planner knows of a GPU: plain data, so planning runs and is tested without one
// (csrc/runner/device_caps_cuda.cc reads a live CUDA device into it).
#pragma once

#include <string>

#include "jit/compiler.h"  // jit::Vendor

namespace ae::plan {

struct DeviceCaps {
  std::string name;                      // for messages: "NVIDIA H200"
  jit::Vendor vendor = jit::Vendor::kNvidia;
  int major = 0, minor = 0;              // NVIDIA compute capability
  std::string gfx;                       // AMD: the gcnArchName's target, "gfx90a"
  int smem_per_block = 0;                // opt-in shared memory (LDS on AMD) per block, bytes
  int multiprocessors = 0;               // SMs (CUs on AMD)
  long long l2_bytes = 0;
  int warp_size = 32;                    // 64 on AMD's CDNA

  // The compile target of the kernels that run here: "sm_90a" (arch-specific on Hopper: the
  // sm90 templates need it, and the sm80 ones are checked for spills at it), "sm_80", "gfx90a".
  std::string arch() const;
  std::string label() const;  // "NVIDIA H200 (sm_90)"
};

// Device classes the planner is tested on (figures from the vendors' data sheets).
namespace devices {
DeviceCaps h100();   // sm_90, 227 KB per block, 132 SMs, 50 MB L2
DeviceCaps h200();   // the same chip with 141 GB: 132 SMs, 227 KB
DeviceCaps a100();   // sm_80, 163 KB per block, 108 SMs, 40 MB L2
DeviceCaps ada();    // sm_89 (L4, RTX 4090 class), 99 KB per block
DeviceCaps mi250();  // gfx90a (one GCD), 64 KB of LDS, 110 CUs, wave64
// By name: "h100", "h200", "a100", "ada", "mi250"; false for another name.
bool named(const std::string& name, DeviceCaps* out);
}  // namespace devices

}  // namespace ae::plan
