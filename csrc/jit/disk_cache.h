// The JIT's disk cache. Layout (the one place it is described):
//   <dir>/kernels/<key>.aek                 one entry per kernel (format: cache_entry.h)
//   <dir>/kernels/<key>.aek.tmp.<pid>.<n>   an entry being written (renamed into place)
//   <dir>/failed/<key>.log                  log + numbered source of a failed compile
// <key> is 32 lowercase hex digits. <dir> is $AE_CACHE_DIR, else
// $XDG_CACHE_HOME/attention_engine, else $HOME/.cache/attention_engine, else the account's
// home (from the password database) + /.cache/attention_engine, else none (memory only):
// never a shared temp folder. AE_DISABLE_DISK_CACHE=1 turns it off.
//
// Trust: an entry is code that this process loads and runs, so whoever can write the folder
// can run code in every process that uses it. The folders are created 0700; a folder owned
// by another user, writable by group or others, or (kernels/, failed/) a symlink turns the
// disk cache off for the process (one warning; kernels stay in memory), and an entry is read
// only if it is a regular file this user owns and alone can write. The checksum in an entry
// detects damage, not forgery; the kernel cache also checks an entry's metadata against the
// request (entry_check.h).
#pragma once
#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include "jit/compiler.h"
#include "jit/hash.h"

namespace ae::jit {

// "" when there is no folder to use (memory only).
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

  // The entry, or nullopt on a miss. A corrupt entry is deleted and counts as a miss; one
  // that is not this user's alone (a symlink, another owner, writable by others) is never
  // read and counts as a miss. A hit refreshes the file's mtime, so prune removes the least
  // recently used first.
  std::optional<CompileResult> load(const Hash128& key);
  // Deletes an entry found wrong after loading (metadata that does not fit its request).
  void discard(const Hash128& key);
  // Writes to a temporary name (mode 0600), then renames: readers see a whole entry or none,
  // and concurrent writers of one key all succeed. Never throws: a failure (read-only
  // folder, full disk) switches this cache to memory-only with one warning per process. A
  // folder or temporary file removed under it (`cache clear`) is made again once.
  void store(const Hash128& key, const CompileResult& result);
  // Writes a failed compile's text to failed/<key>.log; returns the path, or "" if it could
  // not (then it tries a private folder this process makes in the temp folder).
  std::string save_failure(const Hash128& key, const std::string& text);

  std::string entry_path(const Hash128& key) const;
  uint64_t corrupt_entries() const { return corrupt_.load(); }

 private:
  bool ensure_dirs();
  bool make_dirs();  // creates or checks <dir> and <dir>/kernels; degrades when unusable
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
