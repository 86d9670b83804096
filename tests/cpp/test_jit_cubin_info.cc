// figures_from_cubin: a cubin's own register and frame records agree with ptxas's -v lines.
#include <gtest/gtest.h>

#include "jit/compiler.h"
#include "jit/cubin_info.h"
#include "jit/headers.h"
#include "jit/ptxas_log.h"
#include "test_jit_util.h"

namespace ae::jit {
namespace {

CompileResult compile(const CompileRequest& req) {
  return compiler_for_arch(req.arch).compile(req, *template_headers());
}

// Dynamic indexing into a local array: a stack frame of 256 bytes.
constexpr const char* kLocalArray = R"(
extern "C" __global__ void ae_local(float* x) {
  float a[64];
  for (int i = 0; i < 64; ++i) a[i] = x[i * blockDim.x + threadIdx.x];
  float s = 0.f;
  for (int i = 0; i < 64; ++i) s += a[(i * 7 + threadIdx.x) % 64];
  x[threadIdx.x] = s;
}
)";

// 48 KB of static shared memory: a large NOBITS section, which takes no bytes in the file.
constexpr const char* kStaticShared = R"(
extern "C" __global__ void ae_shared(float* x) {
  __shared__ float buf[12288];
  buf[threadIdx.x] = x[threadIdx.x];
  __syncthreads();
  x[threadIdx.x] = buf[(threadIdx.x * 7) % 12288];
}
)";

void expect_same_as_log(const CompileRequest& req) {
  const CompileResult r = compile(req);
  const KernelFigures log = parse_ptxas_log(r.log, r.lowered_name);
  // Where a compile cache below NVRTC skips ptxas (the H200 machine), there is nothing to
  // compare with.
  if (log.registers < 0) GTEST_SKIP() << "no ptxas lines in the log";
  const KernelFigures elf = figures_from_cubin(r.binary, r.lowered_name);
  EXPECT_EQ(elf.registers, log.registers) << req.arch;
  EXPECT_EQ(elf.stack_frame, log.stack_frame) << req.arch;
  EXPECT_EQ(elf.spill_stores, log.stack_frame) << req.arch;  // the frame stands for spills
}

TEST(CubinInfo, MatchesThePtxasLog) {
  for (const char* arch : {"sm_80", "sm_90a"}) {
    expect_same_as_log(testing::saxpy_request(arch));
    CompileRequest local;
    local.source = kLocalArray;
    local.kernel = "ae_local";
    local.arch = arch;
    expect_same_as_log(local);
    const KernelFigures f = figures_from_cubin(compile(local).binary, "ae_local");
    EXPECT_GE(f.stack_frame, 256) << arch;
    CompileRequest shared = local;
    shared.source = kStaticShared;
    shared.kernel = "ae_shared";
    expect_same_as_log(shared);
    EXPECT_GT(figures_from_cubin(compile(shared).binary, "ae_shared").registers, 0) << arch;
  }
}

TEST(CubinInfo, UnknownForOtherBytesOrNames) {
  const CompileResult r = compile(testing::saxpy_request("sm_80"));
  EXPECT_EQ(figures_from_cubin("not an elf", "ae_saxpy").registers, -1);
  EXPECT_EQ(figures_from_cubin(r.binary.substr(0, r.binary.size() / 3), "ae_saxpy").registers,
            -1);  // truncated
  std::string big_endian = r.binary;
  big_endian[5] = 2;
  EXPECT_EQ(figures_from_cubin(big_endian, "ae_saxpy").registers, -1);
  // One function described: its figures, whatever the name asked for.
  EXPECT_GT(figures_from_cubin(r.binary, "other").registers, 0);
}

}  // namespace
}  // namespace ae::jit
