#include "jit/kernel_cache.h"

#include "fmt/format.h"
#include "jit/cache_key.h"
#include "jit/entry_check.h"
#include "jit/errors.h"

namespace ae::jit {

KernelCache::KernelCache(const std::string& dir, bool disk_enabled, CompilerFor compiler_for)
    : compiler_for_(compiler_for ? std::move(compiler_for) : CompilerFor(compiler_for_arch)),
      disk_(dir, disk_enabled) {}

Hash128 KernelCache::key_of(const CompileRequest& req) {
  std::shared_ptr<const HeaderSet> headers = req.headers ? req.headers : template_headers();
  return cache_key(req, *headers, compiler_for_(req.arch).version());
}

KernelPtr KernelCache::find(const Hash128& key) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = memory_.find(key);
  if (it == memory_.end()) return nullptr;
  memory_hits_.fetch_add(1, std::memory_order_relaxed);
  return it->second;
}

KernelPtr KernelCache::get(const CompileRequest& req) {
  std::shared_ptr<const HeaderSet> headers = req.headers ? req.headers : template_headers();
  Compiler& compiler = compiler_for_(req.arch);
  Hash128 key = cache_key(req, *headers, compiler.version());

  std::promise<KernelPtr> promise;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    if (auto it = memory_.find(key); it != memory_.end()) {
      memory_hits_.fetch_add(1, std::memory_order_relaxed);
      return it->second;
    }
    if (auto it = in_flight_.find(key); it != in_flight_.end()) {
      std::shared_future<KernelPtr> pending = it->second;
      lock.unlock();
      return pending.get();  // another thread is building it: share its result or error
    }
    in_flight_.emplace(key, promise.get_future().share());
  }
  try {
    KernelPtr kernel = build(key, req, *headers, compiler);
    std::lock_guard<std::mutex> lock(mutex_);
    memory_.emplace(key, kernel);
    in_flight_.erase(key);
    promise.set_value(kernel);
    return kernel;
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      in_flight_.erase(key);
    }
    promise.set_exception(std::current_exception());
    throw;
  }
}

KernelPtr KernelCache::build(const Hash128& key, const CompileRequest& req,
                             const HeaderSet& headers, Compiler& compiler) {
  auto kernel = std::make_shared<CompiledKernel>();
  kernel->key = key;
  kernel->vendor = compiler.vendor();
  if (std::optional<CompileResult> hit = disk_.load(key)) {
    // An entry made for another request (another kernel's binary, other launch figures) is
    // dropped and rebuilt, never launched.
    if (entry_mismatch(req, *hit).empty()) {
      disk_hits_.fetch_add(1, std::memory_order_relaxed);
      kernel->result = std::move(*hit);
      kernel->from_disk = true;
      return kernel;
    }
    disk_.discard(key);
  }
  compiles_.fetch_add(1, std::memory_order_relaxed);
  try {
    kernel->result = compiler.compile(req, headers);
  } catch (const CompileError& e) {
    std::string path = disk_.save_failure(key, e.what());  // holds log + numbered source
    std::string message = e.what();
    size_t eol = message.find('\n');
    message.insert(eol == std::string::npos ? message.size() : eol,
                   path.empty() ? " (could not save log and source)"
                                : fmt::format(" (log and source saved to {})", path));
    throw CompileError(message, e.log(), e.source(), path);
  }
  disk_.store(key, kernel->result);
  return kernel;
}

void KernelCache::clear_memory() {
  std::lock_guard<std::mutex> lock(mutex_);
  memory_.clear();
}

CacheStats KernelCache::stats() const {
  CacheStats s;
  s.memory_hits = memory_hits_.load();
  s.disk_hits = disk_hits_.load();
  s.compiles = compiles_.load();
  s.corrupt_entries = disk_.corrupt_entries();
  return s;
}

KernelCache& default_kernel_cache() {
  static KernelCache cache(default_cache_dir(), !disk_cache_disabled_by_env());
  return cache;
}

}  // namespace ae::jit
