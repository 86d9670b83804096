#include "jit/disk_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "fmt/format.h"
#include "jit/cache_entry.h"

namespace ae::jit {
namespace fs = std::filesystem;
namespace {

std::atomic<int> g_warnings{0};
std::atomic<uint64_t> g_tmp_counter{0};

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

bool read_file(const std::string& path, std::string* out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st;
  bool ok = fstat(fd, &st) == 0;
  if (ok) {
    out->resize(size_t(st.st_size));
    size_t done = 0;
    while (done < out->size()) {
      ssize_t n = ::read(fd, out->data() + done, out->size() - done);
      if (n <= 0) break;
      done += size_t(n);
    }
    out->resize(done);
  }
  ::close(fd);
  return ok;
}

// Writes all of `data` to a new file; 0 or an errno value (the file is removed on failure).
int write_new_file(const std::string& path, const std::string& data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  size_t done = 0;
  int error = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error = n < 0 ? errno : ENOSPC;
      break;
    }
    done += size_t(n);
  }
  if (::close(fd) != 0 && !error) error = errno;  // NFS, quotas report late
  if (error) ::unlink(path.c_str());
  return error;
}

}  // namespace

std::string default_cache_dir() {
  if (const char* d = env("AE_CACHE_DIR")) return d;
  if (const char* x = env("XDG_CACHE_HOME")) return std::string(x) + "/attention_engine";
  if (const char* h = env("HOME")) return std::string(h) + "/.cache/attention_engine";
  return (fs::temp_directory_path() / "attention_engine").string();
}

bool disk_cache_disabled_by_env() {
  const char* v = env("AE_DISABLE_DISK_CACHE");
  return v && std::strcmp(v, "0") != 0;
}

int disk_cache_warning_count() { return g_warnings.load(); }

DiskCache::DiskCache(std::string dir, bool enabled) : dir_(std::move(dir)), enabled_(enabled) {}

DiskCache DiskCache::from_env() {
  return DiskCache(default_cache_dir(), !disk_cache_disabled_by_env());
}

std::string DiskCache::entry_path(const Hash128& key) const {
  return dir_ + "/kernels/" + key.hex() + ".aek";
}

void DiskCache::degrade(const std::string& reason) {
  if (failed_.exchange(true)) return;
  static std::atomic<bool> warned{false};
  if (warned.exchange(true)) return;
  g_warnings.fetch_add(1);
  fmt::print(stderr,
             "attention_engine: warning: JIT disk cache {} is unusable ({}); compiled kernels "
             "are kept in memory only\n",
             dir_, reason);
}

bool DiskCache::ensure_dirs() {
  std::call_once(dirs_once_, [this] {
    std::error_code ec;
    fs::create_directories(dir_ + "/kernels", ec);
    if (!ec && !fs::is_directory(dir_ + "/kernels", ec))
      ec = std::make_error_code(std::errc::not_a_directory);
    if (ec) {
      degrade(fmt::format("cannot create {}/kernels: {}", dir_, ec.message()));
      return;
    }
    dirs_ok_ = true;
  });
  return dirs_ok_ && !failed_.load();
}

std::optional<CompileResult> DiskCache::load(const Hash128& key) {
  if (!enabled_ || !ensure_dirs()) return std::nullopt;
  std::string path = entry_path(key), bytes;
  if (!read_file(path, &bytes)) return std::nullopt;
  std::optional<CompileResult> r = decode_cache_entry(key, bytes);
  if (!r) {
    // Damaged (torn write, full disk, foreign file): drop it; the caller rebuilds it.
    corrupt_.fetch_add(1);
    ::unlink(path.c_str());
    return std::nullopt;
  }
  ::utimensat(AT_FDCWD, path.c_str(), nullptr, 0);  // best effort: LRU order for prune
  return r;
}

void DiskCache::store(const Hash128& key, const CompileResult& result) {
  if (!enabled_ || !ensure_dirs()) return;
  std::string path = entry_path(key);
  // pid + counter: unique across processes and threads; O_EXCL guards the rest.
  std::string tmp = fmt::format("{}.tmp.{}.{}", path, ::getpid(), g_tmp_counter.fetch_add(1));
  std::string bytes = encode_cache_entry(key, result);
  int error = write_new_file(tmp, bytes);
  if (error == ENOENT) {  // the folder was removed while we ran: make it again, once
    std::error_code ec;
    fs::create_directories(dir_ + "/kernels", ec);
    error = write_new_file(tmp, bytes);
  }
  if (!error && std::rename(tmp.c_str(), path.c_str()) != 0) {
    error = errno;
    ::unlink(tmp.c_str());
  }
  if (error) degrade(fmt::format("cannot write {}: {}", path, std::strerror(error)));
}

std::string DiskCache::save_failure(const Hash128& key, const std::string& text) {
  std::vector<std::string> dirs;
  if (enabled_ && !failed_.load()) dirs.push_back(dir_ + "/failed");
  dirs.push_back((fs::temp_directory_path() / "attention_engine-failed").string());
  for (const auto& d : dirs) {
    std::error_code ec;
    fs::create_directories(d, ec);
    std::string path = fmt::format("{}/{}.log", d, key.hex());
    std::string tmp = fmt::format("{}.tmp.{}.{}", path, ::getpid(), g_tmp_counter.fetch_add(1));
    if (write_new_file(tmp, text) == 0 && std::rename(tmp.c_str(), path.c_str()) == 0)
      return path;
    ::unlink(tmp.c_str());
  }
  return "";
}

}  // namespace ae::jit
