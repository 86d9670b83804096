// The cache folder's info / clear / prune (what `python -m attention_engine.cache` calls).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include <filesystem>

#include "jit/cache_admin.h"
#include "test_jit_util.h"

namespace ae::jit {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

// Keys (32 hex digits): the cache only ever lists and removes files named after one.
const std::string kOld = "00000000000000000000000000000001", kMid = "00000000000000000000000000000002",
                  kNew = "00000000000000000000000000000003", kLog = "00000000000000000000000000000004";

void make_file(const std::string& path, size_t bytes, int age_s, bool entry = false) {
  // an entry starts with the format's magic (cache_entry.h)
  std::string data = entry ? std::string("AEJIT1\n\0", 8) : std::string();
  data += std::string(bytes - data.size(), 'x');
  testing::write_text(path, data);
  struct timespec times[2];
  clock_gettime(CLOCK_REALTIME, &times[0]);
  times[0].tv_sec -= age_s;
  times[1] = times[0];
  ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
}

struct Folder {
  TempDir dir;
  Folder() {
    fs::create_directories(dir / "kernels");
    fs::create_directories(dir / "failed");
    make_file(dir / ("kernels/" + kOld + ".aek"), 1000, 300, true);
    make_file(dir / ("kernels/" + kMid + ".aek"), 1000, 200, true);
    make_file(dir / ("kernels/" + kNew + ".aek"), 1000, 100, true);
    make_file(dir / ("failed/" + kLog + ".log"), 100, 250);
    make_file(dir / ("kernels/" + kOld + ".aek.tmp.1.0"), 50, 7200);  // a dead writer's
    make_file(dir / ("kernels/" + kMid + ".aek.tmp.2.0"), 50, 1);     // a live writer's
    make_file(dir / "unrelated.txt", 10, 1);                          // not ours: never touched
  }
};

TEST(JitCacheAdmin, Summary) {
  Folder f;
  CacheSummary s = summarize_cache(f.dir.path());
  EXPECT_EQ(s.kernels, 3u);
  EXPECT_EQ(s.failed_logs, 1u);
  EXPECT_EQ(s.temp_files, 2u);
  EXPECT_EQ(s.total_bytes, 3200u);
  EXPECT_EQ(summarize_cache(f.dir / "missing").kernels, 0u);
}

TEST(JitCacheAdmin, PruneRemovesOldestFirst) {
  Folder f;
  PruneResult r = prune_cache(f.dir.path(), 2100);
  // stale temp (50), then old.aek (1000) and x.log (100): 3200 - 1150 = 2050 <= 2100
  EXPECT_EQ(r.removed, 3u);
  EXPECT_EQ(r.remaining_bytes, 2050u);
  EXPECT_FALSE(fs::exists(f.dir / ("kernels/" + kOld + ".aek")));
  EXPECT_FALSE(fs::exists(f.dir / ("failed/" + kLog + ".log")));
  EXPECT_FALSE(fs::exists(f.dir / ("kernels/" + kOld + ".aek.tmp.1.0")));
  EXPECT_TRUE(fs::exists(f.dir / ("kernels/" + kMid + ".aek")));
  EXPECT_TRUE(fs::exists(f.dir / ("kernels/" + kNew + ".aek")));
  EXPECT_TRUE(fs::exists(f.dir / ("kernels/" + kMid + ".aek.tmp.2.0")));
  EXPECT_EQ(prune_cache(f.dir.path(), 1u << 30).removed, 0u);
  EXPECT_EQ(prune_cache(f.dir.path(), 0).remaining_bytes, 50u);  // only the live temp file
}

TEST(JitCacheAdmin, ClearRemovesOnlyOurFiles) {
  Folder f;
  EXPECT_EQ(clear_cache(f.dir.path()), 5u);  // not the live writer's temp file
  EXPECT_EQ(summarize_cache(f.dir.path()).total_bytes, 50u);
  EXPECT_TRUE(fs::exists(f.dir / "unrelated.txt"));
}

}  // namespace
}  // namespace ae::jit
