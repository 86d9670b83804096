// The JIT's disk cache. Layout (the one place it is described):
//   <dir>/kernels/<key>.aek                 one entry per kernel (format: cache_entry.h)
//   <dir>/kernels/<key>.aek.tmp.<pid>.<n>   an entry being written (renamed into place)
//   <dir>/failed/<key>.log                  log + numbered source of a failed compile
// <dir> is $AE_CACHE_DIR, else $XDG_CACHE_HOME/attention_engine, else
// ~/.cache/attention_engine. AE_DISABLE_DISK_CACHE=1 turns it off.
#pragma once
#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include "jit/compiler.h"
#include "jit/hash.h"

namespace ae::jit {

std::string default_cache_dir();
bool disk_cache_disabled_by_env();

class DiskCache {
 public:
  // enabled=false: every load misses and store does nothing (memory-only).
  explicit DiskCache(std::string dir, bool enabled = true);
  static DiskCache from_env();  // returned by guaranteed elision: not copyable or movable
  DiskCache(const DiskCache&) = delete;
  DiskCache& operator=(const DiskCache&) = delete;

  const std::string& dir() const { return dir_; }
  // False when disabled, or since the folder turned out unusable (memory-only from then on).
  bool usable() const { return enabled_ && !failed_.load(); }

  // The entry, or nullopt on a miss. A corrupt entry is deleted and counts as a miss.
  // A hit refreshes the file's mtime, so prune removes the least recently used first.
  std::optional<CompileResult> load(const Hash128& key);
  // Writes to a temporary name, then renames: readers see a whole entry or none, and
  // concurrent writers of one key all succeed. Never throws: a failure (read-only folder,
  // full disk) switches this cache to memory-only with one warning per process.
  void store(const Hash128& key, const CompileResult& result);
  // Writes a failed compile's text to failed/<key>.log; returns the path, or "" if it could
  // not (then it tries the system temp folder).
  std::string save_failure(const Hash128& key, const std::string& text);

  std::string entry_path(const Hash128& key) const;
  uint64_t corrupt_entries() const { return corrupt_.load(); }

 private:
  bool ensure_dirs();
  void degrade(const std::string& reason);

  std::string dir_;
  bool enabled_;
  std::once_flag dirs_once_;
  bool dirs_ok_ = false;
  std::atomic<bool> failed_{false};
  std::atomic<uint64_t> corrupt_{0};
};

// How many "disk cache unusable" warnings this process printed (0 or 1; for tests).
int disk_cache_warning_count();

}  // namespace ae::jit
