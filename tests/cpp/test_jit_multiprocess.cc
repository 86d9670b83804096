// Many processes compiling one kernel into one cache folder at the same moment: all succeed
// and one valid entry remains. The parent runs this test binary again as the children; each
// child's compiler waits, after compiling, until every child has compiled, so all of them
// store the entry at about the same time however the machine schedules them (a start time
// alone left the race to chance: on a busy 2-core CI machine one child finished first and
// the others found its entry).
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

// Compiles, then waits (up to a minute) until kChildren processes have compiled, counting the
// marker files they leave in `folder`.
class BarrierCompiler : public Compiler {
 public:
  BarrierCompiler(Compiler& inner, std::string folder) : inner_(inner), folder_(std::move(folder)) {}
  Vendor vendor() const override { return inner_.vendor(); }
  std::string version() override { return inner_.version(); }
  CompileResult compile(const CompileRequest& req, const HeaderSet& headers) override {
    CompileResult result = inner_.compile(req, headers);
    testing::write_text(folder_ + "/" + std::to_string(getpid()) + ".done", "");
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      int done = 0;
      for (const auto& e : std::filesystem::directory_iterator(folder_))
        done += e.path().extension() == ".done";
      if (done >= kChildren) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return result;
  }

 private:
  Compiler& inner_;
  std::string folder_;
};

// Runs only as a child (the parent sets AE_TEST_CHILD_CACHE).
TEST(JitMultiProcess, Child) {
  const char* dir = getenv("AE_TEST_CHILD_CACHE");
  if (!dir) GTEST_SKIP() << "only run as a child of JitMultiProcess.EightProcessesOneEntry";
  // Start together, so the compiles overlap.
  int64_t start = std::atoll(getenv("AE_TEST_CHILD_START"));
  std::this_thread::sleep_for(std::chrono::milliseconds(std::max<int64_t>(0, start - now_ms())));
  BarrierCompiler barrier(nvrtc_compiler(), getenv("AE_TEST_CHILD_BARRIER"));
  KernelCache cache(dir, true, [&barrier](const std::string&) -> Compiler& { return barrier; });
  KernelPtr k = cache.get(testing::saxpy_request("sm_80"));
  ASSERT_EQ(k->result.lowered_name, "ae_saxpy");
  ASSERT_TRUE(cache.disk().usable());
  // Tell the parent whether this child compiled (raced) or found the entry on disk.
  testing::write_text(std::string(getenv("AE_TEST_CHILD_REPORT")) + "/" +
                          std::to_string(getpid()) + (k->from_disk ? ".disk" : ".compiled"),
                      "");
}

TEST(JitMultiProcess, EightProcessesOneEntry) {
  testing::TempDir dir, report, barrier;
  std::string start = std::to_string(now_ms() + 1500);
  std::vector<std::string> env_strings = {"AE_TEST_CHILD_CACHE=" + dir.path(),
                                          "AE_TEST_CHILD_START=" + start,
                                          "AE_TEST_CHILD_REPORT=" + report.path(),
                                          "AE_TEST_CHILD_BARRIER=" + barrier.path()};
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
  // Every child missed the cache before any stored, so every one compiled and stored.
  EXPECT_EQ(compiled, kChildren) << "the children did not overlap: no race was tested";
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
