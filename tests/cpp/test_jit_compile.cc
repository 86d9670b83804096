// The real compilers on this machine (no GPU needed): NVRTC for sm_80 / sm_90a, hipRTC for
// gfx90a, errors with log and numbered source.
#include <gtest/gtest.h>

#include "jit/compiler.h"
#include "jit/errors.h"
#include "jit/headers.h"
#include "test_jit_util.h"

namespace ae::jit {
namespace {

using testing::saxpy_request;

CompileResult compile(const CompileRequest& req) {
  return compiler_for_arch(req.arch).compile(req, *template_headers());
}

TEST(JitArch, MapsComputeCapability) {
  EXPECT_EQ(nvidia_arch(8, 0), "sm_80");
  EXPECT_EQ(nvidia_arch(8, 6), "sm_86");
  EXPECT_EQ(nvidia_arch(9, 0), "sm_90");
  EXPECT_EQ(nvidia_arch(9, 0, true), "sm_90a");
  EXPECT_EQ(nvidia_arch(8, 0, true), "sm_80");  // no arch-specific target before 9.0
  EXPECT_THROW(nvidia_arch(5, 2), JitError);
  EXPECT_EQ(vendor_of_arch("sm_90a"), Vendor::kNvidia);
  EXPECT_EQ(vendor_of_arch("gfx90a"), Vendor::kAmd);
  EXPECT_EQ(vendor_of_arch("gfx90a:xnack-"), Vendor::kAmd);
  EXPECT_THROW(vendor_of_arch("compute_90"), JitError);
}

TEST(JitCompile, NvrtcSm80WithEmbeddedHeader) {
  CompileResult r = compile(saxpy_request("sm_80"));
  EXPECT_EQ(r.arch, "sm_80");
  EXPECT_EQ(r.lowered_name, "ae_saxpy");
  ASSERT_GT(r.binary.size(), 4u);
  EXPECT_EQ(r.binary.substr(0, 4), std::string("\x7f" "ELF"));  // a cubin, not PTX
  EXPECT_GT(r.figures.registers, 0);
  EXPECT_EQ(r.figures.spill_stores, 0);
  EXPECT_EQ(r.figures.spill_loads, 0);
  EXPECT_EQ(r.figures.smem_bytes, 0);
  EXPECT_NE(r.log.find("Used"), std::string::npos) << r.log;
  EXPECT_EQ(r.threads, 128);
}

// A real Hopper tensor-core instruction: compiles only for sm_90a.
const char* kWgmmaSource = R"(#include "common/ae_common.h"
extern "C" __global__ void __launch_bounds__(128) ae_wgmma(ae::f32* out, const ae::u32* a, ae::u64 desc) {
  __shared__ ae::u32 tile[512];
  tile[threadIdx.x] = a[threadIdx.x];
  __syncthreads();
  ae::f32 d0 = 0.f, d1 = 0.f, d2 = 0.f, d3 = 0.f;
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
  asm volatile(
      "{\n"
      "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, %8, 1, 1, 1, 1;\n"
      "}\n"
      : "+f"(d0), "+f"(d1), "+f"(d2), "+f"(d3)
      : "r"(tile[threadIdx.x]), "r"(tile[threadIdx.x + 128]), "r"(tile[threadIdx.x + 256]),
        "r"(tile[threadIdx.x + 384]), "l"(desc));
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  out[threadIdx.x * 4 + 0] = d0;
  out[threadIdx.x * 4 + 1] = d1;
  out[threadIdx.x * 4 + 2] = d2;
  out[threadIdx.x * 4 + 3] = d3;
}
)";

TEST(JitCompile, NvrtcSm90aWgmma) {
  CompileRequest req;
  req.source = kWgmmaSource;
  req.kernel = "ae_wgmma";
  req.arch = "sm_90a";
  CompileResult r = compile(req);
  EXPECT_GT(r.binary.size(), 0u);
  EXPECT_GT(r.figures.registers, 0) << r.log;
  EXPECT_EQ(r.figures.smem_bytes, 2048) << r.log;
  EXPECT_EQ(r.figures.spill_stores, 0);
  EXPECT_NE(r.log.find("sm_90a"), std::string::npos) << r.log;

  // The same source is rejected for sm_80 by ptxas, with its message in the error.
  req.arch = "sm_80";
  try {
    compile(req);
    FAIL() << "wgmma compiled for sm_80";
  } catch (const CompileError& e) {
    EXPECT_NE(e.log().find("wgmma"), std::string::npos) << e.log();
  }
}

TEST(JitCompile, NvrtcTemplateNameIsLowered) {
  CompileRequest req;
  req.source = R"(#include "common/ae_common.h"
template <int N> __global__ void fill(ae::i32* out) { out[threadIdx.x] = ae::max(N, 3); }
template __global__ void fill<7>(ae::i32*);
)";
  req.kernel = "fill<7>";
  req.arch = "sm_90";
  CompileResult r = compile(req);
  EXPECT_EQ(r.lowered_name, "_Z4fillILi7EEvPi");
  EXPECT_GT(r.figures.registers, 0) << r.log;  // figures found under the mangled name
}

TEST(JitCompile, HiprtcGfx90a) {
  CompileRequest req;
  req.source = R"(#include "common/ae_common.h"
extern "C" __global__ void ae_reverse(ae::f32* out, const ae::f32* in) {
  __shared__ ae::f32 s[256];
  s[threadIdx.x] = in[threadIdx.x];
  __syncthreads();
  out[threadIdx.x] = s[255 - threadIdx.x] * 2.0f;
}
)";
  req.kernel = "ae_reverse";
  req.arch = "gfx90a";
  CompileResult r = compile(req);
  ASSERT_GT(r.binary.size(), 4u);
  EXPECT_EQ(r.binary.substr(0, 4), std::string("\x7f" "ELF"));
  EXPECT_EQ(r.lowered_name, "ae_reverse");
  EXPECT_GT(r.figures.registers, 0);
  EXPECT_EQ(r.figures.smem_bytes, 1024);
  EXPECT_EQ(r.figures.spill_stores, 0);
  EXPECT_EQ(r.figures.stack_frame, 0);
  EXPECT_EQ(r.figures.agprs, 0);  // no MFMA
  EXPECT_GT(r.figures.sgprs, 0);
}

TEST(JitCompile, SyntaxErrorGivesLogAndNumberedSource) {
  for (const char* arch : {"sm_80", "gfx90a"}) {
    CompileRequest req = saxpy_request(arch);
    req.source += "this is not C++;\n";
    try {
      compile(req);
      FAIL() << "compiled a syntax error for " << arch;
    } catch (const CompileError& e) {
      std::string what = e.what();
      EXPECT_NE(e.log().find("error"), std::string::npos) << e.log();
      EXPECT_NE(what.find(e.log()), std::string::npos);
      EXPECT_NE(what.find(arch), std::string::npos);
      EXPECT_NE(what.find("    6 | this is not C++;"), std::string::npos) << what;
      EXPECT_NE(e.source().find("    1 | #include \"common/ae_common.h\""), std::string::npos);
    }
  }
}

TEST(JitCompile, OnlyEmbeddedHeadersCanBeIncluded) {
  CompileRequest req = saxpy_request("sm_80");
  req.source = "#include <cuda_runtime.h>\n" + req.source;
  EXPECT_THROW(compile(req), CompileError);
}

}  // namespace
}  // namespace ae::jit
