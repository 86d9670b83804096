// The disk cache's trust model (issue 15, defect 7): a cache entry is code that runs in this
// process, so only a folder that is this user's alone is used. The folder is created 0700;
// one that another user owns or can write, or that is reached through a symlink, turns the
// disk cache off (memory only, one warning); an entry that is a symlink, is owned by someone
// else or whose metadata does not match the request is never loaded; and there is no
// fallback to a shared temp folder.
#include <gtest/gtest.h>
#include <pwd.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "jit/cache_entry.h"
#include "jit/kernel_cache.h"
#include "test_jit_util.h"

namespace ae::jit {
namespace {

using testing::FakeCompiler;
using testing::TempDir;
namespace fs = std::filesystem;

constexpr uid_t kNobody = 65534;

KernelCache::CompilerFor use(Compiler& c) {
  return [&c](const std::string&) -> Compiler& { return c; };
}

CompileRequest request(const std::string& source = "kernel body") {
  CompileRequest r;
  r.source = source;
  r.kernel = "k";
  r.arch = "sm_90a";
  r.threads = 128;
  return r;
}

mode_t mode_of(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

// Compiles the request once into `dir`; returns the entry's path.
std::string make_entry(const std::string& dir, FakeCompiler& fake, const CompileRequest& req) {
  KernelCache cache(dir, true, use(fake));
  return cache.disk().entry_path(cache.get(req)->key);
}

// A fresh cache over `dir` (a new process, in effect): was the request served from disk?
bool loads_from_disk(const std::string& dir, const CompileRequest& req) {
  FakeCompiler fake;
  KernelCache cache(dir, true, use(fake));
  return cache.get(req)->from_disk;
}

TEST(JitCacheTrust, FolderAndEntriesAreCreatedPrivate) {
  TempDir dir;
  const mode_t old = ::umask(022);  // the usual umask: it must not decide
  FakeCompiler fake;
  std::string entry = make_entry(dir / "cache", fake, request());
  ::umask(old);
  EXPECT_EQ(mode_of(dir / "cache"), 0700u);
  EXPECT_EQ(mode_of(dir / "cache/kernels"), 0700u);
  EXPECT_EQ(mode_of(entry), 0600u);
  EXPECT_TRUE(loads_from_disk(dir / "cache", request()));
}

TEST(JitCacheTrust, FolderWritableByOthersIsNotUsed) {
  for (mode_t mode : {0777, 0770, 0722}) {
    TempDir dir;
    fs::create_directory(dir / "cache");
    ASSERT_EQ(::chmod((dir / "cache").c_str(), mode), 0);
    FakeCompiler fake;
    KernelCache cache(dir / "cache", true, use(fake));
    EXPECT_FALSE(cache.get(request())->from_disk);
    EXPECT_FALSE(cache.disk().usable()) << std::oct << mode;
    EXPECT_FALSE(fs::exists(dir / "cache/kernels")) << "wrote into a folder others can write";
    EXPECT_EQ(cache.get(request()).get(), cache.get(request()).get());  // memory still serves
  }
}

TEST(JitCacheTrust, KernelsFolderWritableByOthersIsNotUsed) {
  TempDir dir;
  FakeCompiler fake;
  make_entry(dir.path(), fake, request());
  ASSERT_EQ(::chmod((dir / "kernels").c_str(), 0777), 0);
  EXPECT_FALSE(loads_from_disk(dir.path(), request()));
}

TEST(JitCacheTrust, FolderOwnedBySomeoneElseIsNotUsed) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a folder away";
  TempDir dir;
  FakeCompiler fake;
  make_entry(dir / "cache", fake, request());
  ASSERT_TRUE(loads_from_disk(dir / "cache", request()));
  ASSERT_EQ(::chown((dir / "cache").c_str(), kNobody, kNobody), 0);
  KernelCache cache(dir / "cache", true, use(fake));
  EXPECT_FALSE(cache.get(request())->from_disk);
  EXPECT_FALSE(cache.disk().usable());
}

TEST(JitCacheTrust, SymlinkedKernelsFolderIsNotUsed) {
  TempDir dir, elsewhere;
  FakeCompiler fake;
  make_entry(elsewhere.path(), fake, request());  // a valid entry, behind a symlink
  fs::create_directory(dir / "cache");
  ASSERT_EQ(::chmod((dir / "cache").c_str(), 0700), 0);
  fs::create_directory_symlink(elsewhere / "kernels", dir / "cache/kernels");
  KernelCache cache(dir / "cache", true, use(fake));
  EXPECT_FALSE(cache.get(request())->from_disk);
  EXPECT_FALSE(cache.disk().usable());
}

TEST(JitCacheTrust, EntryThatIsASymlinkIsNotLoaded) {
  TempDir dir, elsewhere;
  FakeCompiler fake;
  std::string real = make_entry(elsewhere.path(), fake, request());
  std::string entry = make_entry(dir.path(), fake, request());
  fs::remove(entry);
  fs::create_symlink(real, entry);
  EXPECT_FALSE(loads_from_disk(dir.path(), request()));
}

TEST(JitCacheTrust, EntryOwnedBySomeoneElseIsNotLoaded) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a file away";
  TempDir dir;
  FakeCompiler fake;
  std::string entry = make_entry(dir.path(), fake, request());
  ASSERT_EQ(::chown(entry.c_str(), kNobody, kNobody), 0);
  EXPECT_FALSE(loads_from_disk(dir.path(), request()));
}

TEST(JitCacheTrust, EntryWritableByOthersIsNotLoaded) {
  TempDir dir;
  FakeCompiler fake;
  std::string entry = make_entry(dir.path(), fake, request());
  ASSERT_EQ(::chmod(entry.c_str(), 0666), 0);
  EXPECT_FALSE(loads_from_disk(dir.path(), request()));
}

// An entry with a valid checksum whose metadata does not match the request: what someone
// who can write the folder could plant. Each must be refused (and rebuilt), never loaded.
TEST(JitCacheTrust, ForgedMetadataIsRefused) {
  const std::vector<std::pair<const char*, void (*)(CompileResult&)>> forgeries = {
      {"threads", [](CompileResult& r) { r.threads = 1024; }},
      {"arch", [](CompileResult& r) { r.arch = "sm_80"; }},
      {"kernel name", [](CompileResult& r) { r.lowered_name = "other_kernel"; }},
      {"no kernel name", [](CompileResult& r) { r.lowered_name = ""; }},
      {"registers", [](CompileResult& r) { r.figures.registers = 100000; }},
      {"shared memory", [](CompileResult& r) { r.figures.smem_bytes = -7; }},
      {"empty binary", [](CompileResult& r) { r.binary.clear(); }},
  };
  for (const auto& [what, forge] : forgeries) {
    TempDir dir;
    FakeCompiler fake;
    CompileRequest req = request();
    std::string entry = make_entry(dir.path(), fake, req);
    KernelCache cache(dir.path(), true, use(fake));
    Hash128 key = cache.key_of(req);
    std::optional<CompileResult> good = decode_cache_entry(key, testing::read_text(entry));
    ASSERT_TRUE(good) << what;
    CompileResult forged = *good;
    forge(forged);
    testing::write_text(entry, encode_cache_entry(key, forged));
    ::chmod(entry.c_str(), 0600);
    KernelPtr k = cache.get(req);
    EXPECT_FALSE(k->from_disk) << what << " was loaded";
    EXPECT_EQ(k->result.threads, 128) << what;
    EXPECT_EQ(k->result.lowered_name, "k") << what;
  }
}

TEST(JitCacheTrust, TruncatedEntryIsRebuilt) {
  TempDir dir;
  FakeCompiler fake;
  std::string entry = make_entry(dir.path(), fake, request());
  std::string bytes = testing::read_text(entry);
  testing::write_text(entry, bytes.substr(0, bytes.size() - 3));
  EXPECT_FALSE(loads_from_disk(dir.path(), request()));
  EXPECT_TRUE(loads_from_disk(dir.path(), request()));  // rewritten whole
}

// Without HOME, XDG_CACHE_HOME and AE_CACHE_DIR the folder is the account's own home (from
// the password database), never a shared temp folder that someone else could create first.
TEST(JitCacheTrust, NoSharedTempFolderFallback) {
  const char* saved_home = getenv("HOME");
  std::string home = saved_home ? saved_home : "";
  unsetenv("HOME");
  unsetenv("XDG_CACHE_HOME");
  unsetenv("AE_CACHE_DIR");
  std::string dir = default_cache_dir();
  if (saved_home) setenv("HOME", home.c_str(), 1);
  const std::string tmp = fs::temp_directory_path().string();
  EXPECT_NE(dir.rfind(tmp, 0), 0u) << dir << " is under the shared temp folder";
  const struct passwd* pw = getpwuid(geteuid());
  if (pw && pw->pw_dir && *pw->pw_dir)
    EXPECT_EQ(dir, std::string(pw->pw_dir) + "/.cache/attention_engine");
  else
    EXPECT_EQ(dir, "");  // memory only
}

TEST(JitCacheTrust, FailureLogsNeverGoToASharedTempFolder) {
  // An unusable cache folder: the log goes to a fresh private folder, not a fixed name in
  // /tmp that another user could have made (and read).
  FakeCompiler fake;
  KernelCache cache("/proc/attention_engine_cache", true, use(fake));
  try {
    cache.get(request("syntax error"));
    FAIL() << "no error";
  } catch (const CompileError& e) {
    const std::string shared = (fs::temp_directory_path() / "attention_engine-failed").string();
    EXPECT_NE(e.log_path().rfind(shared + "/", 0), 0u) << e.log_path();
    if (!e.log_path().empty()) {
      EXPECT_EQ(mode_of(fs::path(e.log_path()).parent_path().string()), 0700u);
      fs::remove_all(fs::path(e.log_path()).parent_path());
    }
  }
}

}  // namespace
}  // namespace ae::jit
