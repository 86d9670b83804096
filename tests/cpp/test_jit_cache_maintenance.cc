// Clear and prune beside running processes (issue 15, defect 8): they remove only entries the
// cache made (by name, kind and owner), never a live writer's temporary file, and never follow
// a symlinked folder; a writer whose temporary file vanished anyway keeps its disk cache.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "jit/cache_admin.h"
#include "jit/kernel_cache.h"
#include "test_jit_util.h"

namespace ae::jit {
namespace {

using testing::FakeCompiler;
using testing::TempDir;
namespace fs = std::filesystem;

const std::string kKey = "0123456789abcdef0123456789abcdef";

KernelCache::CompilerFor use(Compiler& c) {
  return [&c](const std::string&) -> Compiler& { return c; };
}

CompileRequest request(int i) {
  CompileRequest r;
  r.source = "kernel " + std::to_string(i);
  r.kernel = "k";
  r.arch = "sm_90a";
  return r;
}

void age(const std::string& path, int seconds) {
  struct timespec t[2];
  clock_gettime(CLOCK_REALTIME, &t[0]);
  t[0].tv_sec -= seconds;
  t[1] = t[0];
  ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), t, AT_SYMLINK_NOFOLLOW), 0) << path;
}

std::string private_folder(const TempDir& dir) {
  fs::create_directories(dir / "kernels");
  fs::create_directories(dir / "failed");
  ::chmod((dir / "kernels").c_str(), 0700);
  ::chmod((dir / "failed").c_str(), 0700);
  return dir.path();
}

TEST(JitCacheMaintenance, ClearLeavesALiveWritersTempFile) {
  TempDir dir;
  private_folder(dir);
  const std::string live = dir / ("kernels/" + kKey + ".aek.tmp.123.0");
  const std::string dead = dir / ("kernels/" + kKey + ".aek.tmp.124.0");
  testing::write_text(live, "AEJIT1");
  testing::write_text(dead, "AEJIT1");
  age(dead, 7200);
  clear_cache(dir.path());
  EXPECT_TRUE(fs::exists(live)) << "a writer's file vanished under it";
  EXPECT_FALSE(fs::exists(dead));
}

TEST(JitCacheMaintenance, WritersKeepTheirDiskCacheWhileClearRuns) {
  TempDir dir;
  FakeCompiler fake;
  // The disk cache warns once per process: in a process where an earlier test warned (one
  // ae_tests run of everything; ctest runs each test alone) the count cannot grow, and
  // usable() below is the check that still holds.
  const int warned = disk_cache_warning_count();
  KernelCache cache(dir.path(), true, use(fake));
  cache.get(request(-1));  // creates the folder
  std::atomic<bool> done{false};
  std::thread clearer([&] {
    while (!done.load()) clear_cache(dir.path());
  });
  for (int i = 0; i < 400 && cache.disk().usable(); ++i) cache.get(request(i));
  done = true;
  clearer.join();
  EXPECT_TRUE(cache.disk().usable()) << "clear turned a writer's disk cache off";
  EXPECT_EQ(disk_cache_warning_count(), warned);
}

TEST(JitCacheMaintenance, ClearDoesNotFollowASymlinkedKernelsFolder) {
  TempDir dir, elsewhere;
  testing::write_text(elsewhere / (kKey + ".aek"), "someone else's");
  testing::write_text(elsewhere / "notes.txt", "keep me");
  fs::create_directory_symlink(elsewhere.path(), dir / "kernels");
  fs::create_directory(dir / "failed");
  testing::write_text(elsewhere / (kKey + ".log"), "keep me");
  fs::remove(dir / "failed");
  fs::create_directory_symlink(elsewhere.path(), dir / "failed");
  EXPECT_EQ(clear_cache(dir.path()), 0u);
  EXPECT_EQ(prune_cache(dir.path(), 0).removed, 0u);
  EXPECT_TRUE(fs::exists(elsewhere / (kKey + ".aek")));
  EXPECT_TRUE(fs::exists(elsewhere / (kKey + ".log")));
  EXPECT_TRUE(fs::exists(elsewhere / "notes.txt"));
  EXPECT_EQ(summarize_cache(dir.path()).kernels, 0u);  // and lists nothing through it
}

TEST(JitCacheMaintenance, ClearAndPruneTouchOnlyEntriesTheCacheMade) {
  TempDir dir;
  private_folder(dir);
  const std::string ours = dir / ("kernels/" + kKey + ".aek");
  const std::string log = dir / ("failed/" + kKey + ".log");
  testing::write_text(ours, std::string("AEJIT1\n\0", 8) + "rest");
  testing::write_text(log, "log");
  const std::vector<std::string> not_ours = {
      dir / "kernels/important.aek",                 // not a key
      dir / ("kernels/" + kKey + "0.aek"),           // 33 digits
      dir / ("kernels/" + kKey.substr(0, 31) + "g.aek"),
      dir / ("kernels/" + kKey + ".aek.bak"),
      dir / ("kernels/" + kKey + ".aek.tmp.x.1"),     // not a writer's pid.counter
      dir / ("kernels/" + kKey + ".log"),
      dir / "failed/notes.log",
      dir / ("failed/" + kKey + ".aek"),
  };
  for (const auto& p : not_ours) testing::write_text(p, "not a cache entry");
  // An entry-named file that is not an entry (no magic): not ours either.
  const std::string impostor = dir / "kernels/fedcba9876543210fedcba9876543210.aek";
  testing::write_text(impostor, "#!/bin/sh\n");
  EXPECT_EQ(summarize_cache(dir.path()).kernels, 1u);
  EXPECT_EQ(prune_cache(dir.path(), 0).removed, 2u);
  testing::write_text(ours, std::string("AEJIT1\n\0", 8) + "rest");
  testing::write_text(log, "log");
  EXPECT_EQ(clear_cache(dir.path()), 2u);
  EXPECT_FALSE(fs::exists(ours));
  EXPECT_FALSE(fs::exists(log));
  for (const auto& p : not_ours) EXPECT_TRUE(fs::exists(p)) << p;
  EXPECT_TRUE(fs::exists(impostor));
}

TEST(JitCacheMaintenance, ClearLeavesFilesOfOtherUsers) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a file away";
  TempDir dir;
  private_folder(dir);
  const std::string entry = dir / ("kernels/" + kKey + ".aek");
  testing::write_text(entry, std::string("AEJIT1\n\0", 8));
  ASSERT_EQ(::chown(entry.c_str(), 65534, 65534), 0);
  EXPECT_EQ(clear_cache(dir.path()), 0u);
  EXPECT_TRUE(fs::exists(entry));
}

}  // namespace
}  // namespace ae::jit
