// The kernel cache: misses, hits, keys, corrupt entries, unusable folders, threads.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>

#include <filesystem>
#include <thread>
#include <vector>

#include "jit/cache_admin.h"
#include "jit/cache_key.h"
#include "jit/kernel_cache.h"
#include "test_jit_util.h"

namespace ae::jit {
namespace {

using testing::CountingCompiler;
using testing::FakeCompiler;
using testing::TempDir;
namespace fs = std::filesystem;

KernelCache::CompilerFor use(Compiler& c) {
  return [&c](const std::string&) -> Compiler& { return c; };
}

CompileRequest fake_request(const std::string& source = "kernel body") {
  CompileRequest r;
  r.source = source;
  r.kernel = "k";
  r.arch = "sm_90a";
  return r;
}

size_t kernel_files(const std::string& dir) { return summarize_cache(dir).kernels; }

TEST(JitCache, RealNvrtcMissThenHitsWithoutCompiling) {
  TempDir dir;
  CountingCompiler nvrtc(nvrtc_compiler());
  CompileRequest req = testing::saxpy_request("sm_80");
  {
    KernelCache cache(dir.path(), true, use(nvrtc));
    KernelPtr a = cache.get(req);
    EXPECT_FALSE(a->from_disk);
    EXPECT_EQ(nvrtc.calls, 1);
    KernelPtr b = cache.get(req);  // memory hit
    EXPECT_EQ(a.get(), b.get());
    EXPECT_EQ(cache.find(a->key).get(), a.get());  // hot path: by key, no hashing
    EXPECT_EQ(cache.stats().compiles, 1u);
    EXPECT_EQ(cache.stats().memory_hits, 2u);
  }
  EXPECT_EQ(kernel_files(dir.path()), 1u);
  KernelCache fresh(dir.path(), true, use(nvrtc));  // a new process, in effect
  EXPECT_EQ(fresh.find(fresh.key_of(req)), nullptr);
  KernelPtr c = fresh.get(req);
  EXPECT_TRUE(c->from_disk);
  EXPECT_EQ(nvrtc.calls, 1);  // the disk hit did not compile
  EXPECT_EQ(fresh.stats().disk_hits, 1u);
  EXPECT_EQ(c->result.lowered_name, "ae_saxpy");
  EXPECT_EQ(c->result.threads, 128);
  EXPECT_GT(c->result.figures.registers, 0);
  EXPECT_NE(c->result.log.find("Used"), std::string::npos);
}

TEST(JitCache, KeyCoversEverythingThatMatters) {
  FakeCompiler fake;
  auto headers = std::make_shared<HeaderSet>(
      std::vector<HeaderFile>{{"common/a.h", "int a;"}, {"common/b.h", "int b;"}});
  CompileRequest base = fake_request();
  base.headers = headers;
  const Hash128 k0 = cache_key(base, *headers, "nvrtc 13.0");
  EXPECT_EQ(k0, cache_key(base, *headers, "nvrtc 13.0"));  // deterministic

  std::vector<std::pair<const char*, Hash128>> changed;
  auto with = [&](const char* what, auto edit, const HeaderSet* hs = nullptr,
                  const char* version = "nvrtc 13.0") {
    CompileRequest r = base;
    edit(r);
    changed.emplace_back(what, cache_key(r, hs ? *hs : *headers, version));
  };
  with("source", [](CompileRequest& r) { r.source += " "; });
  with("option", [](CompileRequest& r) { r.options.push_back("-DX=1"); });
  with("arch", [](CompileRequest& r) { r.arch = "sm_90"; });
  with("kernel", [](CompileRequest& r) { r.kernel = "k2"; });
  with("threads", [](CompileRequest& r) { r.threads = 256; });
  with("compiler version", [](CompileRequest&) {}, nullptr, "nvrtc 13.1");
  HeaderSet content({{"common/a.h", "int a; "}, {"common/b.h", "int b;"}});
  with("header content", [](CompileRequest&) {}, &content);
  HeaderSet renamed({{"common/a2.h", "int a;"}, {"common/b.h", "int b;"}});
  with("header name", [](CompileRequest&) {}, &renamed);
  HeaderSet added({{"common/a.h", "int a;"}, {"common/b.h", "int b;"}, {"c.h", ""}});
  with("header added", [](CompileRequest&) {}, &added);
  for (size_t i = 0; i < changed.size(); ++i) {
    EXPECT_NE(changed[i].second, k0) << changed[i].first;
    for (size_t j = 0; j < i; ++j)
      EXPECT_NE(changed[i].second, changed[j].second) << changed[i].first << changed[j].first;
  }
  // Option boundaries matter: {"-DA", "=1"} is not {"-DA=", "1"}.
  CompileRequest x = base, y = base;
  x.options = {"-DA", "=1"};
  y.options = {"-DA=", "1"};
  EXPECT_NE(cache_key(x, *headers, "v"), cache_key(y, *headers, "v"));
}

TEST(JitCache, CorruptEntryIsDetectedAndRebuilt) {
  TempDir dir;
  FakeCompiler fake;
  CompileRequest req = fake_request();
  std::string path;
  {
    KernelCache cache(dir.path(), true, use(fake));
    path = cache.disk().entry_path(cache.get(req)->key);
  }
  ASSERT_TRUE(fs::exists(path));
  const std::string good = testing::read_text(path);
  const std::vector<std::string> damaged = {
      good.substr(0, good.size() / 2),                          // truncated
      good.substr(0, good.size() - 1) + char(good.back() ^ 1),  // one bit flipped
      "",                                                       // empty
      "garbage",
  };
  int expected_calls = 1;
  for (const auto& bad : damaged) {
    testing::write_text(path, bad);
    KernelCache cache(dir.path(), true, use(fake));
    KernelPtr k = cache.get(req);
    EXPECT_FALSE(k->from_disk);
    EXPECT_EQ(fake.calls, ++expected_calls);
    EXPECT_EQ(cache.stats().corrupt_entries, 1u);
    EXPECT_EQ(testing::read_text(path), good);  // rewritten whole
  }
  KernelCache cache(dir.path(), true, use(fake));
  EXPECT_TRUE(cache.get(req)->from_disk);
  EXPECT_EQ(fake.calls, expected_calls);
}

// Root ignores permission bits, so "unusable" is simulated with paths no one can create.
void expect_memory_only(const std::string& cache_dir) {
  FakeCompiler fake;
  KernelCache cache(cache_dir, true, use(fake));
  KernelPtr a = cache.get(fake_request());  // still works
  EXPECT_EQ(a->result.lowered_name, "k");
  EXPECT_FALSE(cache.disk().usable()) << cache_dir;
  EXPECT_EQ(cache.get(fake_request()).get(), a.get());  // memory cache still serves
  EXPECT_EQ(fake.calls, 1);
  EXPECT_EQ(disk_cache_warning_count(), 1);  // one warning per process, however many caches
}

TEST(JitCache, FolderUnderARegularFileFallsBackToMemory) {
  TempDir dir;
  testing::write_text(dir / "file", "x");
  expect_memory_only(dir / "file/cache");
}

TEST(JitCache, FolderThatIsAFileFallsBackToMemory) {
  TempDir dir;
  testing::write_text(dir / "kernels", "not a folder");  // <cache>/kernels is a file
  expect_memory_only(dir.path());
}

TEST(JitCache, FolderThatCannotBeCreatedFallsBackToMemory) {
  expect_memory_only("/proc/attention_engine_cache");  // procfs refuses mkdir, even to root
}

// A full disk, for real: a file size limit makes the entry's write fail midway (EFBIG).
TEST(JitCache, FullDiskFallsBackToMemoryAndLeavesNoPartialFile) {
  TempDir dir;
  FakeCompiler fake;
  KernelCache cache(dir.path(), true, use(fake));
  CompileRequest big = fake_request(std::string(64 * 1024, 'x'));
  struct rlimit saved;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
  auto old_handler = signal(SIGXFSZ, SIG_IGN);  // else the write kills the process
  struct rlimit small = saved;
  small.rlim_cur = 4096;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  KernelPtr k = cache.get(big);
  setrlimit(RLIMIT_FSIZE, &saved);
  signal(SIGXFSZ, old_handler);
  EXPECT_EQ(k->result.lowered_name, "k");
  EXPECT_FALSE(cache.disk().usable());
  CacheSummary s = summarize_cache(dir.path());
  EXPECT_EQ(s.kernels, 0u);
  EXPECT_EQ(s.temp_files, 0u);  // the partial write was removed
  EXPECT_EQ(cache.get(big).get(), k.get());
  EXPECT_EQ(fake.calls, 1);
  EXPECT_EQ(disk_cache_warning_count(), 1);
}

TEST(JitCache, FolderRemovedWhileRunningIsMadeAgain) {
  TempDir dir;
  FakeCompiler fake;
  KernelCache cache(dir / "c", true, use(fake));
  cache.get(fake_request("one"));
  fs::remove_all(dir / "c");
  cache.get(fake_request("two"));
  EXPECT_TRUE(cache.disk().usable());
  EXPECT_EQ(kernel_files(dir / "c"), 1u);
}

TEST(JitCache, DisabledDiskCacheWritesNothing) {
  TempDir dir;
  FakeCompiler fake;
  KernelCache cache(dir.path(), false, use(fake));
  cache.get(fake_request());
  KernelCache again(dir.path(), false, use(fake));
  EXPECT_FALSE(again.get(fake_request())->from_disk);
  EXPECT_EQ(fake.calls, 2);
  EXPECT_FALSE(fs::exists(dir / "kernels"));
}

TEST(JitCache, EnvironmentChoosesTheFolder) {
  TempDir dir;
  setenv("AE_CACHE_DIR", dir.path().c_str(), 1);
  EXPECT_EQ(default_cache_dir(), dir.path());
  unsetenv("AE_CACHE_DIR");
  setenv("XDG_CACHE_HOME", "/x/y", 1);
  EXPECT_EQ(default_cache_dir(), "/x/y/attention_engine");
  unsetenv("XDG_CACHE_HOME");
  EXPECT_EQ(default_cache_dir(), std::string(getenv("HOME")) + "/.cache/attention_engine");
  setenv("AE_DISABLE_DISK_CACHE", "1", 1);
  EXPECT_TRUE(disk_cache_disabled_by_env());
  setenv("AE_DISABLE_DISK_CACHE", "0", 1);
  EXPECT_FALSE(disk_cache_disabled_by_env());
  unsetenv("AE_DISABLE_DISK_CACHE");
}

TEST(JitCache, FailedCompileSavesLogAndSourceInTheFolder) {
  TempDir dir;
  FakeCompiler fake;
  KernelCache cache(dir.path(), true, use(fake));
  CompileRequest req = fake_request("line one\nsyntax error here\n");
  try {
    cache.get(req);
    FAIL() << "no error";
  } catch (const CompileError& e) {
    ASSERT_FALSE(e.log_path().empty());
    EXPECT_EQ(e.log_path().rfind(dir / "failed/", 0), 0u) << e.log_path();
    std::string what = e.what();
    EXPECT_NE(what.find(e.log_path()), std::string::npos);
    std::string saved = testing::read_text(e.log_path());
    EXPECT_NE(saved.find("error: syntax error"), std::string::npos) << saved;
    EXPECT_NE(saved.find("    2 | syntax error here"), std::string::npos) << saved;
  }
  EXPECT_EQ(kernel_files(dir.path()), 0u);
  EXPECT_THROW(cache.get(req), CompileError);  // errors are not cached: tried again
  EXPECT_EQ(fake.calls, 2);
}

TEST(JitCache, ThreadsAskingAtOnceCompileOnce) {
  TempDir dir;
  CountingCompiler nvrtc(nvrtc_compiler());
  KernelCache cache(dir.path(), true, use(nvrtc));
  CompileRequest req = testing::saxpy_request("sm_90");
  std::vector<KernelPtr> got(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) threads.emplace_back([&, i] { got[i] = cache.get(req); });
  for (auto& t : threads) t.join();
  EXPECT_EQ(nvrtc.calls, 1);
  for (const auto& k : got) EXPECT_EQ(k.get(), got[0].get());
}

TEST(JitCache, ThreadsShareOneCompileError) {
  FakeCompiler fake;
  KernelCache cache("/unused", false, use(fake));
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&] {
      try {
        cache.get(fake_request("syntax error"));
      } catch (const CompileError&) {
        errors.fetch_add(1);
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors, 4);
  EXPECT_GE(fake.calls, 1);
  EXPECT_LE(fake.calls, 4);
}

}  // namespace
}  // namespace ae::jit
