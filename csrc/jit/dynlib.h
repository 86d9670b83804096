// Opening the GPU libraries (NVRTC, hipRTC, libcuda, libamdhip64) with dlopen, on first use,
// so nothing links against them and the engine imports on machines that have none of them.
#pragma once
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace ae::jit {

// A dlopen'ed library, never closed (its functions stay valid for the whole process).
class DynLib {
 public:
  // Tries, in order: the file named by env_var (a file, or a folder holding one of the names),
  // each name as is (the loader's own search: already loaded, LD_LIBRARY_PATH, ld.so.cache),
  // then each name inside every folder from add_library_search_path() and extra_dirs.
  // Throws JitError naming everything it tried when all fail.
  static DynLib open(const std::string& what, const char* env_var,
                     const std::vector<std::string>& names,
                     const std::vector<std::string>& extra_dirs = {});

  // The symbol, or nullptr when optional and missing (else throws JitError).
  void* symbol(const char* name, bool optional = false) const;
  template <typename Fn>
  void bind(Fn*& fn, const char* name, bool optional = false) const {
    fn = reinterpret_cast<Fn*>(symbol(name, optional));
  }
  const std::string& path() const { return path_; }  // as dlopen'ed, for messages
  // The loaded file's real path and size ("path:size"): tells two builds of one version
  // apart in cache keys without reading the (large) file.
  std::string fingerprint() const;
  void* handle() const { return handle_; }

 private:
  void* handle_ = nullptr;
  std::string path_, what_;
};

// A library's function table, loaded by the first get() that succeeds. A failed load throws
// and is tried again on the next call (a search path may have been added meanwhile).
// The table is never freed: its functions may be called until the process exits.
template <typename Api>
class LazyApi {
 public:
  template <typename Load>  // Load: () -> std::unique_ptr<Api>, throws on failure
  const Api& get(Load&& load) {
    if (Api* p = ptr_.load(std::memory_order_acquire)) return *p;
    std::lock_guard<std::mutex> lock(mutex_);
    if (!ptr_.load(std::memory_order_relaxed)) ptr_.store(load().release());
    return *ptr_.load(std::memory_order_relaxed);
  }

 private:
  std::atomic<Api*> ptr_{nullptr};
  std::mutex mutex_;
};

// Folders searched for the libraries after the loader's own paths; Python's package init
// adds the pip wheels' folders (<site-packages>/nvidia/cu13/lib, nvidia/cuda_nvrtc/lib).
void add_library_search_path(const std::string& dir);
std::vector<std::string> library_search_paths();

}  // namespace ae::jit
