// Inspecting and trimming a disk cache folder (layout: disk_cache.h); used by
// `python -m attention_engine.cache`. Beside running processes and in a folder others may
// have touched, it lists and removes only what the cache itself writes: regular files this
// user owns, named <key>.aek (and starting as an entry does) or <key>.aek.tmp.<pid>.<n> in
// kernels/, <key>.log or <key>.log.tmp.<pid>.<n> in failed/, never through a symlinked
// kernels/ or failed/ folder. A temporary file younger than an hour is a live writer's and is
// never removed.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ae::jit {

struct CacheFile {
  std::string path;
  uint64_t bytes = 0;
  int64_t mtime_ns = 0;
  enum Kind { kKernel, kFailedLog, kTemp } kind = kKernel;
  dev_t dev = 0;  // which file it was when listed (removal checks it is still that one)
  ino_t ino = 0;
};

struct CacheSummary {
  std::string dir;
  size_t kernels = 0, failed_logs = 0, temp_files = 0;
  uint64_t total_bytes = 0;  // all three kinds
};

// The layout's files (nothing else in the folder is ever listed or removed). None for "".
std::vector<CacheFile> list_cache_files(const std::string& dir);
CacheSummary summarize_cache(const std::string& dir);
// Removes every kernel and failure log, and temp files older than an hour (writers that
// died); returns how many files.
size_t clear_cache(const std::string& dir);

struct PruneResult {
  size_t removed = 0;
  uint64_t freed_bytes = 0, remaining_bytes = 0;
};
// Removes temp files older than an hour (writers that died), then the least recently used
// kernels and logs (oldest mtime first; a hit refreshes it) until at most max_bytes remain.
PruneResult prune_cache(const std::string& dir, uint64_t max_bytes);

}  // namespace ae::jit
