// Many processes compiling one kernel into one cache folder at the same moment: all succeed
// and one valid entry remains. The parent runs this test binary again as the children.
#include <gtest/gtest.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "jit/cache_admin.h"
#include "jit/kernel_cache.h"
#include "test_jit_util.h"

extern char** environ;

namespace ae::jit {
namespace {

constexpr int kChildren = 8;

int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// Runs only as a child (the parent sets AE_TEST_CHILD_CACHE).
TEST(JitMultiProcess, Child) {
  const char* dir = getenv("AE_TEST_CHILD_CACHE");
  if (!dir) GTEST_SKIP() << "only run as a child of JitMultiProcess.EightProcessesOneEntry";
  // Start together, so the compiles overlap.
  int64_t start = std::atoll(getenv("AE_TEST_CHILD_START"));
  std::this_thread::sleep_for(std::chrono::milliseconds(std::max<int64_t>(0, start - now_ms())));
  KernelCache cache(dir, true);
  KernelPtr k = cache.get(testing::saxpy_request("sm_80"));
  ASSERT_EQ(k->result.lowered_name, "ae_saxpy");
  ASSERT_TRUE(cache.disk().usable());
  // Tell the parent whether this child compiled (raced) or found the entry on disk.
  testing::write_text(std::string(getenv("AE_TEST_CHILD_REPORT")) + "/" +
                          std::to_string(getpid()) + (k->from_disk ? ".disk" : ".compiled"),
                      "");
}

TEST(JitMultiProcess, EightProcessesOneEntry) {
  testing::TempDir dir, report;
  std::string start = std::to_string(now_ms() + 1500);
  std::vector<std::string> env_strings = {"AE_TEST_CHILD_CACHE=" + dir.path(),
                                          "AE_TEST_CHILD_START=" + start,
                                          "AE_TEST_CHILD_REPORT=" + report.path()};
  for (char** e = environ; *e; ++e)
    if (std::string(*e).rfind("AE_TEST_CHILD_", 0) != 0) env_strings.push_back(*e);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string binary = AE_TESTS_BINARY, filter = "--gtest_filter=JitMultiProcess.Child";
  char* argv[] = {binary.data(), filter.data(), nullptr};

  std::vector<pid_t> pids;
  for (int i = 0; i < kChildren; ++i) {
    pid_t pid;
    ASSERT_EQ(posix_spawn(&pid, binary.c_str(), nullptr, nullptr, argv, envp.data()), 0);
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child " << pid << " failed";
  }
  int compiled = 0, reports = 0;
  for (const auto& e : std::filesystem::directory_iterator(report.path())) {
    ++reports;
    compiled += e.path().extension() == ".compiled";
  }
  EXPECT_EQ(reports, kChildren);
  EXPECT_GE(compiled, 2) << "the children did not overlap: no race was tested";
  CacheSummary s = summarize_cache(dir.path());
  EXPECT_EQ(s.kernels, 1u);
  EXPECT_EQ(s.temp_files, 0u);
  // The survivor is whole: a fresh cache loads it without compiling.
  testing::CountingCompiler nvrtc(nvrtc_compiler());
  KernelCache cache(dir.path(), true, [&nvrtc](const std::string&) -> Compiler& { return nvrtc; });
  KernelPtr k = cache.get(testing::saxpy_request("sm_80"));
  EXPECT_TRUE(k->from_disk);
  EXPECT_EQ(nvrtc.calls, 0);
}

}  // namespace
}  // namespace ae::jit
