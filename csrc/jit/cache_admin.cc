#include "jit/cache_admin.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <optional>

#include "jit/cache_entry.h"

namespace ae::jit {
namespace {

constexpr int64_t kStaleNs = int64_t(3600) * 1000000000;  // a temp file's writer has died

bool all_of(const std::string& s, size_t from, size_t to, bool (*ok)(char)) {
  if (from >= to || to > s.size()) return false;
  for (size_t i = from; i < to; ++i)
    if (!ok(s[i])) return false;
  return true;
}
bool hex_digit(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }
bool digit(char c) { return c >= '0' && c <= '9'; }

// What a file named `name` in kernels/ (ext ".aek") or failed/ (ext ".log") is, if the cache
// wrote it: "<32 hex digits><ext>" or "<32 hex digits><ext>.tmp.<pid>.<n>".
std::optional<CacheFile::Kind> kind_of(const std::string& name, const std::string& ext,
                                       CacheFile::Kind whole) {
  const size_t k = 32, e = k + ext.size();
  if (!all_of(name, 0, k, hex_digit) || name.compare(k, ext.size(), ext) != 0) return {};
  if (name.size() == e) return whole;
  if (name.compare(e, 5, ".tmp.") != 0) return {};
  const size_t dot = name.find('.', e + 5);
  if (dot == std::string::npos || !all_of(name, e + 5, dot, digit) ||
      !all_of(name, dot + 1, name.size(), digit))
    return {};
  return CacheFile::kTemp;
}

// The folder as an open descriptor, never through a symlink (-1 when missing or a link).
int open_folder(const std::string& folder) {
  return ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

bool starts_as_entry(int dirfd, const char* name) {
  int fd = ::openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return false;
  std::string head(8, '\0');
  ssize_t n = ::read(fd, head.data(), head.size());
  ::close(fd);
  return n == ssize_t(head.size()) && has_cache_entry_magic(head);
}

void scan(const std::string& folder, const std::string& ext, CacheFile::Kind whole,
          std::vector<CacheFile>* out) {
  int dirfd = open_folder(folder);
  if (dirfd < 0) return;
  DIR* d = ::fdopendir(dirfd);
  if (!d) {
    ::close(dirfd);
    return;
  }
  while (const struct dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    std::optional<CacheFile::Kind> kind = kind_of(name, ext, whole);
    if (!kind) continue;
    struct stat st;
    if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) ||
        st.st_uid != ::geteuid())
      continue;
    if (*kind == CacheFile::kKernel && !starts_as_entry(dirfd, name.c_str())) continue;
    CacheFile f;
    f.kind = *kind;
    f.path = folder + "/" + name;
    f.bytes = uint64_t(st.st_size);
    f.mtime_ns = int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    f.dev = st.st_dev;
    f.ino = st.st_ino;
    out->push_back(std::move(f));
  }
  ::closedir(d);  // closes dirfd
}

// Unlinks f if it is still the file that was listed, through its folder opened without
// following links.
bool remove_file(const CacheFile& f) {
  const size_t slash = f.path.rfind('/');
  const std::string name = f.path.substr(slash + 1);
  int dirfd = open_folder(f.path.substr(0, slash));
  if (dirfd < 0) return false;
  struct stat st;
  bool ok = ::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == f.dev &&
            st.st_ino == f.ino && ::unlinkat(dirfd, name.c_str(), 0) == 0;
  ::close(dirfd);
  return ok;
}

int64_t now_ns() {
  using namespace std::chrono;
  return duration_cast<nanoseconds>(system_clock::now().time_since_epoch()).count();
}

}  // namespace

std::vector<CacheFile> list_cache_files(const std::string& dir) {
  std::vector<CacheFile> files;
  if (dir.empty()) return files;
  scan(dir + "/kernels", ".aek", CacheFile::kKernel, &files);
  scan(dir + "/failed", ".log", CacheFile::kFailedLog, &files);
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
  const int64_t now = now_ns();
  size_t n = 0;
  for (const auto& f : list_cache_files(dir))
    if (f.kind != CacheFile::kTemp || now - f.mtime_ns > kStaleNs) n += remove_file(f);
  return n;
}

PruneResult prune_cache(const std::string& dir, uint64_t max_bytes) {
  const int64_t now = now_ns();
  std::vector<CacheFile> files = list_cache_files(dir);
  std::sort(files.begin(), files.end(),
            [](const CacheFile& a, const CacheFile& b) { return a.mtime_ns < b.mtime_ns; });
  PruneResult r;
  for (const auto& f : files) r.remaining_bytes += f.bytes;
  auto remove = [&](const CacheFile& f) {
    if (!remove_file(f)) return;
    ++r.removed;
    r.freed_bytes += f.bytes;
    r.remaining_bytes -= f.bytes;
  };
  for (const auto& f : files)
    if (f.kind == CacheFile::kTemp && now - f.mtime_ns > kStaleNs) remove(f);
  for (const auto& f : files) {
    if (r.remaining_bytes <= max_bytes) break;
    if (f.kind != CacheFile::kTemp) remove(f);  // a fresh temp file is a live writer's
  }
  return r;
}

}  // namespace ae::jit
