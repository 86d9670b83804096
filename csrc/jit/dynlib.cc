#include "jit/dynlib.h"

#include <dlfcn.h>
#include <limits.h>
#include <link.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>

#include "fmt/format.h"
#include "jit/errors.h"

namespace ae::jit {
namespace {

std::mutex g_paths_mutex;
std::vector<std::string>& search_paths() {
  static std::vector<std::string> paths;
  return paths;
}

bool is_dir(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

void add_library_search_path(const std::string& dir) {
  std::lock_guard<std::mutex> lock(g_paths_mutex);
  auto& paths = search_paths();
  if (std::find(paths.begin(), paths.end(), dir) == paths.end()) paths.push_back(dir);
}

std::vector<std::string> library_search_paths() {
  std::lock_guard<std::mutex> lock(g_paths_mutex);
  return search_paths();
}

DynLib DynLib::open(const std::string& what, const char* env_var,
                    const std::vector<std::string>& names,
                    const std::vector<std::string>& extra_dirs) {
  std::vector<std::string> candidates;
  const char* env = env_var ? std::getenv(env_var) : nullptr;
  if (env && *env) {
    if (is_dir(env)) {
      for (const auto& n : names) candidates.push_back(std::string(env) + "/" + n);
    } else {
      candidates.push_back(env);
    }
  }
  for (const auto& n : names) candidates.push_back(n);
  std::vector<std::string> dirs = library_search_paths();
  dirs.insert(dirs.end(), extra_dirs.begin(), extra_dirs.end());
  for (const auto& d : dirs)
    for (const auto& n : names) candidates.push_back(d + "/" + n);

  std::string tried;
  for (const auto& c : candidates) {
    // RTLD_LOCAL: keep our copy's symbols from interposing on anyone else's.
    void* h = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h) {
      DynLib lib;
      lib.handle_ = h;
      lib.path_ = c;
      lib.what_ = what;
      return lib;
    }
    const char* err = dlerror();
    tried += fmt::format("\n  {}: {}", c, err ? err : "not found");
  }
  throw JitError(fmt::format(
      "attention_engine: cannot load {} (needed for JIT-compiled kernels). Tried:{}{}", what,
      tried,
      env_var ? fmt::format("\nSet {} to the library's path to choose one.", env_var) : ""));
}

void* DynLib::symbol(const char* name, bool optional) const {
  void* p = dlsym(handle_, name);
  if (!p && !optional)
    throw JitError(fmt::format("attention_engine: {} ({}) lacks the function {}", what_, path_,
                               name));
  return p;
}

std::string DynLib::fingerprint() const {
  // dladdr on any of its symbols finds the file actually mapped (after symlinks, $ORIGIN...).
  struct link_map* map = nullptr;
  std::string file = path_;
  if (dlinfo(handle_, RTLD_DI_LINKMAP, &map) == 0 && map && map->l_name && *map->l_name)
    file = map->l_name;
  char real[PATH_MAX];
  if (realpath(file.c_str(), real)) file = real;
  struct stat st;
  long long size = stat(file.c_str(), &st) == 0 ? (long long)st.st_size : -1;
  return fmt::format("{}:{}", file, size);
}

}  // namespace ae::jit
