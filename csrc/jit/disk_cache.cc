#include "jit/disk_cache.h"

#include <fcntl.h>
#include <pwd.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "fmt/format.h"
#include "jit/cache_entry.h"
#include "jit/private_dir.h"

namespace ae::jit {
namespace fs = std::filesystem;
namespace {

std::atomic<int> g_warnings{0};
std::atomic<uint64_t> g_tmp_counter{0};

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

enum class Read { kOk, kMissing, kUntrusted };

// Reads an entry that is a regular file this user alone can write (never through a symlink),
// and refreshes its mtime (LRU order for prune).
Read read_entry(const std::string& path, std::string* out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return errno == ENOENT ? Read::kMissing : Read::kUntrusted;
  struct stat st;
  if (fstat(fd, &st) != 0 || !untrusted_file(st).empty()) {
    ::close(fd);
    return Read::kUntrusted;
  }
  out->resize(size_t(st.st_size));
  size_t done = 0;
  while (done < out->size()) {
    ssize_t n = ::read(fd, out->data() + done, out->size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += size_t(n);
  }
  out->resize(done);
  ::futimens(fd, nullptr);  // best effort
  ::close(fd);
  return Read::kOk;
}

// A folder of this process's own in the temp folder (mkdtemp: a fresh name, mode 0700) for
// failure logs when the cache folder cannot take them; "" if none can be made.
const std::string& private_temp_dir() {
  static const std::string dir = [] {
    std::string templ = (fs::temp_directory_path() / "attention_engine-failed-XXXXXX").string();
    return ::mkdtemp(templ.data()) ? templ : std::string();
  }();
  return dir;
}

// Writes all of `data` to a new file; 0 or an errno value (the file is removed on failure).
int write_new_file(const std::string& path, const std::string& data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
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
  // Never a shared temp folder, which another user could create first and fill: the
  // account's own home, else no disk cache at all.
  struct passwd pw, *found = nullptr;
  char buf[4096];
  if (::getpwuid_r(::geteuid(), &pw, buf, sizeof buf, &found) == 0 && found && found->pw_dir &&
      *found->pw_dir)
    return std::string(found->pw_dir) + "/.cache/attention_engine";
  return "";
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
             dir_.empty() ? "(none)" : dir_, reason);
}

bool DiskCache::ensure_dirs() {
  std::call_once(dirs_once_, [this] { dirs_ok_ = make_dirs(); });
  return dirs_ok_ && !failed_.load();
}

bool DiskCache::make_dirs() {
  if (dir_.empty()) {
    degrade("no folder: set AE_CACHE_DIR or HOME");
    return false;
  }
  std::string why = make_private_dir(dir_, /*follow_symlink=*/true);
  if (why.empty()) why = make_private_dir(dir_ + "/kernels", /*follow_symlink=*/false);
  if (!why.empty()) {
    degrade(why);
    return false;
  }
  return true;
}

std::optional<CompileResult> DiskCache::load(const Hash128& key) {
  if (!enabled_ || !ensure_dirs()) return std::nullopt;
  std::string path = entry_path(key), bytes;
  const Read read = read_entry(path, &bytes);
  if (read == Read::kMissing) return std::nullopt;
  std::optional<CompileResult> r;
  if (read == Read::kOk) r = decode_cache_entry(key, bytes);
  if (!r) {
    // Damaged (torn write, full disk, foreign file) or not ours alone: never loaded. A
    // damaged one is dropped; the caller rebuilds it, and its store replaces either kind.
    corrupt_.fetch_add(1);
    if (read == Read::kOk) ::unlink(path.c_str());
    return std::nullopt;
  }
  return r;
}

void DiskCache::discard(const Hash128& key) {
  corrupt_.fetch_add(1);
  ::unlink(entry_path(key).c_str());
}

void DiskCache::store(const Hash128& key, const CompileResult& result) {
  if (!enabled_ || !ensure_dirs()) return;
  const std::string path = entry_path(key);
  const std::string bytes = encode_cache_entry(key, result);
  int error = 0;
  for (int attempt = 0; attempt < 2; ++attempt) {
    // pid + counter: unique across processes and threads; O_EXCL guards the rest.
    std::string tmp = fmt::format("{}.tmp.{}.{}", path, ::getpid(), g_tmp_counter.fetch_add(1));
    error = write_new_file(tmp, bytes);
    if (!error && std::rename(tmp.c_str(), path.c_str()) != 0) {
      error = errno;
      ::unlink(tmp.c_str());
    }
    if (error != ENOENT || attempt > 0) break;
    // The folder, or our temporary file, was removed while we ran (`cache clear`, rm -rf):
    // make the folder again, checked as at first use, and write once more.
    if (!make_dirs()) return;
  }
  if (error == ENOENT) return;  // removed again: a clear is running; the entry is skipped
  if (error) degrade(fmt::format("cannot write {}: {}", path, std::strerror(error)));
}

std::string DiskCache::save_failure(const Hash128& key, const std::string& text) {
  std::vector<std::string> dirs;
  if (enabled_ && !failed_.load() && !dir_.empty() &&
      make_private_dir(dir_ + "/failed", /*follow_symlink=*/false).empty())
    dirs.push_back(dir_ + "/failed");
  if (!private_temp_dir().empty()) dirs.push_back(private_temp_dir());
  for (const auto& d : dirs) {
    std::string path = fmt::format("{}/{}.log", d, key.hex());
    std::string tmp = fmt::format("{}.tmp.{}.{}", path, ::getpid(), g_tmp_counter.fetch_add(1));
    if (write_new_file(tmp, text) == 0 && std::rename(tmp.c_str(), path.c_str()) == 0)
      return path;
    ::unlink(tmp.c_str());
  }
  return "";
}

}  // namespace ae::jit
