// Before any timing: each candidate's main kernel compiled (a pool of threads over the JIT;
// NVRTC compiles concurrently and the kernel cache builds each key once) and judged by the
// compiler's report. A kernel that spills, or whose registers or shared memory exceed the
// device's limits, cannot win and is never timed.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "ir/variant.h"
#include "jit/compiler.h"
#include "plan/device_caps.h"
#include "tune/candidates.h"

namespace ae::tune {

using Clock = std::chrono::steady_clock;

struct CompileReport {
  bool compiled = false;  // false: not compiled (an error, or the deadline came first)
  bool eligible = false;  // compiled, no spills, within the device's limits
  std::string why;        // !eligible: why ("spills 24 bytes", "deadline", the compile error)
  jit::KernelFigures figures;
};

// Whether a compiled main kernel fits: no spills, at most 255 registers and a 64K register
// file per block, static + dynamic shared memory within smem_per_block. "" when it does.
std::string unfit(const jit::KernelFigures& f, const plan::Step& step, const plan::DeviceCaps& dev);

// Compiles the candidates' main kernels on `threads` worker threads (0: one per core, at most
// 16), in order; a compile not started by `deadline` is skipped (the first candidate, the
// table's, is always compiled). done(n) is called with the number finished so far, from the
// calling thread only (it may call into Python: the workers never do).
std::vector<CompileReport> compile_all(const std::vector<Candidate>& candidates,
                                       const ir::Variant& variant, const plan::DeviceCaps& dev,
                                       int threads, Clock::time_point deadline,
                                       const std::function<void(size_t)>& done = {});

}  // namespace ae::tune
