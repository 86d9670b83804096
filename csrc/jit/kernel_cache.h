// Compiled kernels, found in memory, else on disk, else compiled (once per key even when
// many threads ask at the same time). The memory side is keyed by the cache key, so a
// caller that kept the key (or the CompiledKernel) never hashes a source again.
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "jit/compiler.h"
#include "jit/disk_cache.h"
#include "jit/hash.h"

namespace ae::jit {

constexpr int kMaxDevices = 64;

struct CompiledKernel {
  Hash128 key;
  CompileResult result;
  Vendor vendor = Vendor::kNvidia;
  bool from_disk = false;  // loaded from the disk cache rather than compiled

  // Per-device function handles once the module is loaded there (launch.cc fills them);
  // the hot path reads one atomic. Modules stay loaded until the process exits.
  mutable std::array<std::atomic<void*>, kMaxDevices> functions{};
  mutable std::array<std::atomic<int>, kMaxDevices> dynamic_smem_set{};  // bytes allowed so far
  mutable std::mutex load_mutex;
};

using KernelPtr = std::shared_ptr<const CompiledKernel>;

struct CacheStats {
  uint64_t memory_hits = 0, disk_hits = 0, compiles = 0, corrupt_entries = 0;
};

class KernelCache {
 public:
  // Chooses the compiler for an arch; tests inject counting or fake compilers.
  using CompilerFor = std::function<Compiler&(const std::string& arch)>;

  KernelCache(const std::string& dir, bool disk_enabled, CompilerFor compiler_for = {});

  // Memory, then disk, then compile. Throws CompileError (its log and numbered source are
  // also written under <dir>/failed/, path in the message) or JitError.
  KernelPtr get(const CompileRequest& request);
  // Memory only, no hashing: the hot path. Null when not there.
  KernelPtr find(const Hash128& key) const;
  Hash128 key_of(const CompileRequest& request);

  void clear_memory();  // drops the memory side (for benchmarks); disk entries stay
  CacheStats stats() const;
  DiskCache& disk() { return disk_; }

 private:
  KernelPtr build(const Hash128& key, const CompileRequest& request, const HeaderSet& headers,
                  Compiler& compiler);

  CompilerFor compiler_for_;
  DiskCache disk_;
  mutable std::mutex mutex_;
  std::unordered_map<Hash128, KernelPtr> memory_;
  std::unordered_map<Hash128, std::shared_future<KernelPtr>> in_flight_;
  mutable std::atomic<uint64_t> memory_hits_{0}, disk_hits_{0}, compiles_{0};
};

// The process-wide cache: folder and on/off from the environment at first use.
KernelCache& default_kernel_cache();

}  // namespace ae::jit
