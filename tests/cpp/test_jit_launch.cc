// What can be checked of launching without a GPU: configuration checks, messages, the
// missing-driver error.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include "jit/errors.h"
#include "jit/launch.h"

namespace ae::jit {
namespace {

std::unique_ptr<CompiledKernel> fake_kernel() {
  auto k = std::make_unique<CompiledKernel>();
  k->result.lowered_name = "ae_fwd";
  k->result.arch = "sm_90a";
  k->result.binary = "not a cubin";
  return k;
}

TEST(JitLaunch, DescribeNamesEverything) {
  auto k = fake_kernel();
  LaunchConfig c;
  c.grid = {8, 4, 1};
  c.block = {128, 1, 1};
  c.cluster = {2, 1, 1};
  c.dynamic_smem = 65536;
  c.device = 1;
  std::string d = describe_launch(*k, c);
  for (const char* part : {"'ae_fwd'", "sm_90a", "grid=(8,4,1)", "block=(128,1,1)",
                           "smem=65536", "cluster=(2,1,1)", "device=1"})
    EXPECT_NE(d.find(part), std::string::npos) << part << " in " << d;
}

TEST(JitLaunch, BadConfigurationIsRefusedBeforeTheDriver) {
  auto k = fake_kernel();
  auto message = [&](LaunchConfig c) {
    try {
      launch_kernel(*k, c, nullptr);
    } catch (const JitError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  LaunchConfig big;
  big.block = {2048, 1, 1};
  EXPECT_NE(message(big).find("more than 1024 threads"), std::string::npos);
  EXPECT_NE(message(big).find("'ae_fwd'"), std::string::npos);
  LaunchConfig zero;
  zero.grid = {0, 1, 1};
  EXPECT_NE(message(zero).find("a dimension is 0"), std::string::npos);
  LaunchConfig odd;
  odd.grid = {3, 1, 1};
  odd.cluster = {2, 1, 1};
  EXPECT_NE(message(odd).find("not a multiple of the cluster"), std::string::npos);
}

TEST(JitLaunch, MissingDriverIsAClearError) {
  if (void* h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD)) {
    dlclose(h);
    GTEST_SKIP() << "a CUDA driver is loaded here";
  }
  if (void* h = dlopen("libcuda.so.1", RTLD_NOW)) {
    dlclose(h);
    GTEST_SKIP() << "a CUDA driver is installed here";
  }
  auto k = fake_kernel();
  LaunchConfig c;
  try {
    launch_kernel(*k, c, nullptr);
    FAIL() << "launched without a driver";
  } catch (const JitError& e) {
    EXPECT_NE(std::string(e.what()).find("libcuda.so.1"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ae::jit
