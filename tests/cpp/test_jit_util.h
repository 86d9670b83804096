// Shared by the test_jit_*.cc tests: temp folders, sample kernels, fake and counting compilers.
#pragma once
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "jit/compiler.h"
#include "jit/errors.h"

namespace ae::jit::testing {

class TempDir {
 public:
  TempDir() {
    std::string templ = (std::filesystem::temp_directory_path() / "ae_jit_test_XXXXXX").string();
    path_ = mkdtemp(templ.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// A small kernel that uses the embedded header.
inline const char* kSaxpySource = R"(#include "common/ae_common.h"
extern "C" __global__ void ae_saxpy(ae::f32* y, const ae::f32* x, ae::f32 a, ae::i32 n) {
  ae::i32 i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}
)";

inline CompileRequest saxpy_request(const std::string& arch) {
  CompileRequest r;
  r.source = kSaxpySource;
  r.kernel = "ae_saxpy";
  r.arch = arch;
  r.threads = 128;
  return r;
}

// Compiles nothing: the "binary" is derived from the source; "syntax error" in a source
// fails. Counts its calls, so tests can tell a cache hit from a compile.
class FakeCompiler : public Compiler {
 public:
  explicit FakeCompiler(Vendor v = Vendor::kNvidia) : vendor_(v) {}
  Vendor vendor() const override { return vendor_; }
  std::string version() override { return version_; }
  CompileResult compile(const CompileRequest& req, const HeaderSet& headers) override {
    calls.fetch_add(1);
    if (req.source.find("syntax error") != std::string::npos)
      throw make_compile_error("FakeRTC", req, "ae_kernel.cu(1): error: syntax error");
    CompileResult r;
    r.arch = req.arch;
    r.binary = "BIN[" + req.arch + "]" + req.source + std::to_string(headers.files().size());
    r.lowered_name = req.kernel;
    r.threads = req.threads;
    r.figures.registers = 32;
    r.figures.smem_bytes = 1024;
    r.figures.spill_stores = r.figures.spill_loads = r.figures.stack_frame = 0;
    r.log = "fake log";
    return r;
  }
  std::atomic<int> calls{0};
  std::string version_ = "fake 1.0";

 private:
  Vendor vendor_;
};

// Forwards to a real compiler and counts the calls.
class CountingCompiler : public Compiler {
 public:
  explicit CountingCompiler(Compiler& inner) : inner_(inner) {}
  Vendor vendor() const override { return inner_.vendor(); }
  std::string version() override { return inner_.version(); }
  CompileResult compile(const CompileRequest& req, const HeaderSet& headers) override {
    calls.fetch_add(1);
    return inner_.compile(req, headers);
  }
  std::atomic<int> calls{0};

 private:
  Compiler& inner_;
};

}  // namespace ae::jit::testing
