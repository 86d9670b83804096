#include "jit/cache_admin.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

namespace ae::jit {
namespace fs = std::filesystem;
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void scan(const std::string& folder, bool failed_logs, std::vector<CacheFile>* out) {
  std::error_code ec;
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    CacheFile f;
    if (name.find(".tmp.") != std::string::npos) f.kind = CacheFile::kTemp;
    else if (!failed_logs && ends_with(name, ".aek")) f.kind = CacheFile::kKernel;
    else if (failed_logs && ends_with(name, ".log")) f.kind = CacheFile::kFailedLog;
    else continue;
    struct stat st;
    if (::lstat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    f.path = it->path().string();
    f.bytes = uint64_t(st.st_size);
    f.mtime_ns = int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    out->push_back(std::move(f));
  }
}

}  // namespace

std::vector<CacheFile> list_cache_files(const std::string& dir) {
  std::vector<CacheFile> files;
  scan(dir + "/kernels", false, &files);
  scan(dir + "/failed", true, &files);
  return files;
}

CacheSummary summarize_cache(const std::string& dir) {
  CacheSummary s;
  s.dir = dir;
  for (const auto& f : list_cache_files(dir)) {
    s.total_bytes += f.bytes;
    if (f.kind == CacheFile::kKernel) ++s.kernels;
    else if (f.kind == CacheFile::kFailedLog) ++s.failed_logs;
    else ++s.temp_files;
  }
  return s;
}

size_t clear_cache(const std::string& dir) {
  size_t n = 0;
  for (const auto& f : list_cache_files(dir)) n += ::unlink(f.path.c_str()) == 0;
  return n;
}

PruneResult prune_cache(const std::string& dir, uint64_t max_bytes) {
  using namespace std::chrono;
  const int64_t now_ns =
      duration_cast<nanoseconds>(system_clock::now().time_since_epoch()).count();
  const int64_t stale_ns = int64_t(3600) * 1000000000;
  std::vector<CacheFile> files = list_cache_files(dir);
  std::sort(files.begin(), files.end(),
            [](const CacheFile& a, const CacheFile& b) { return a.mtime_ns < b.mtime_ns; });
  PruneResult r;
  for (const auto& f : files) r.remaining_bytes += f.bytes;
  auto remove = [&](const CacheFile& f) {
    if (::unlink(f.path.c_str()) != 0) return;
    ++r.removed;
    r.freed_bytes += f.bytes;
    r.remaining_bytes -= f.bytes;
  };
  for (const auto& f : files)
    if (f.kind == CacheFile::kTemp && now_ns - f.mtime_ns > stale_ns) remove(f);
  for (const auto& f : files) {
    if (r.remaining_bytes <= max_bytes) break;
    if (f.kind != CacheFile::kTemp) remove(f);  // a fresh temp file is a live writer's
  }
  return r;
}

}  // namespace ae::jit
