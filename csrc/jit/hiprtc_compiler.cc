// hipRTC behind the Compiler interface. Up to ROCm 6 hipRTC lives in libamdhip64; from
// ROCm 7 in libhiprtc. Loaded with dlopen on first use; functions declared here.
#include <cstdlib>
#include <mutex>

#include "fmt/format.h"
#include "jit/amdgpu_metadata.h"
#include "jit/compiler.h"
#include "jit/dynlib.h"
#include "jit/errors.h"
#include "jit/rtc_program.h"

namespace ae::jit {
namespace {

using hiprtcProgram = void*;
using hiprtcResult = int;  // 0 == HIPRTC_SUCCESS

struct HiprtcApi {
  DynLib lib;
  const char* (*GetErrorString)(hiprtcResult);
  hiprtcResult (*CreateProgram)(hiprtcProgram*, const char*, const char*, int,
                                const char* const*, const char* const*);
  hiprtcResult (*DestroyProgram)(hiprtcProgram*);
  hiprtcResult (*CompileProgram)(hiprtcProgram, int, const char* const*);
  hiprtcResult (*GetProgramLogSize)(hiprtcProgram, size_t*);
  hiprtcResult (*GetProgramLog)(hiprtcProgram, char*);
  hiprtcResult (*GetCodeSize)(hiprtcProgram, size_t*);
  hiprtcResult (*GetCode)(hiprtcProgram, char*);
  hiprtcResult (*AddNameExpression)(hiprtcProgram, const char*);
  hiprtcResult (*GetLoweredName)(hiprtcProgram, const char*, const char**);
  std::string version;
  mutable std::mutex compile_mutex;
};

std::vector<std::string> rocm_lib_dirs() {
  std::vector<std::string> dirs;
  if (const char* root = std::getenv("ROCM_PATH")) dirs.push_back(std::string(root) + "/lib");
  dirs.push_back("/opt/rocm/lib");
  return dirs;
}

std::unique_ptr<HiprtcApi> load_hiprtc() {
  auto a = std::make_unique<HiprtcApi>();
  a->lib = DynLib::open("hipRTC", "AE_HIPRTC_PATH",
                        {"libhiprtc.so", "libhiprtc.so.7", "libhiprtc.so.6", "libamdhip64.so",
                         "libamdhip64.so.7", "libamdhip64.so.6", "libamdhip64.so.5"},
                        rocm_lib_dirs());
  const DynLib& l = a->lib;
  l.bind(a->GetErrorString, "hiprtcGetErrorString");
  l.bind(a->CreateProgram, "hiprtcCreateProgram");
  l.bind(a->DestroyProgram, "hiprtcDestroyProgram");
  l.bind(a->CompileProgram, "hiprtcCompileProgram");
  l.bind(a->GetProgramLogSize, "hiprtcGetProgramLogSize");
  l.bind(a->GetProgramLog, "hiprtcGetProgramLog");
  l.bind(a->GetCodeSize, "hiprtcGetCodeSize");
  l.bind(a->GetCode, "hiprtcGetCode");
  l.bind(a->AddNameExpression, "hiprtcAddNameExpression");
  l.bind(a->GetLoweredName, "hiprtcGetLoweredName");
  // hiprtcVersion is not a usable build id (ROCm 5.2 answers 9.0); the HIP runtime's version
  // is, and the library's fingerprint tells builds apart.
  int (*runtime_version)(int*) = nullptr;
  l.bind(runtime_version, "hipRuntimeGetVersion", /*optional=*/true);
  int hip = -1;
  if (runtime_version) runtime_version(&hip);
  a->version = fmt::format("hiprtc hip={} {}", hip, l.fingerprint());
  return a;
}

const HiprtcApi& hiprtc() {
  static LazyApi<HiprtcApi> api;
  return api.get(load_hiprtc);
}

void check(const HiprtcApi& api, hiprtcResult r, const char* what) {
  if (r != 0)
    throw JitError(fmt::format("attention_engine: {} failed: {}", what, api.GetErrorString(r)));
}

class HiprtcCompiler final : public Compiler {
 public:
  Vendor vendor() const override { return Vendor::kAmd; }
  std::string version() override { return hiprtc().version; }

  CompileResult compile(const CompileRequest& req, const HeaderSet& headers) override {
    const HiprtcApi& api = hiprtc();
    // comgr in older ROCm is not reliably thread-safe: one compile at a time per process.
    std::lock_guard<std::mutex> lock(api.compile_mutex);
    std::vector<const char*> names = headers.name_ptrs(), texts = headers.content_ptrs();
    hiprtcProgram prog = nullptr;
    check(api,
          api.CreateProgram(&prog, req.source.c_str(), req.file_name.c_str(), int(names.size()),
                            texts.data(), names.data()),
          "hiprtcCreateProgram");
    struct Destroy {
      const HiprtcApi& api;
      hiprtcProgram& p;
      ~Destroy() { api.DestroyProgram(&p); }
    } destroy{api, prog};

    if (!req.kernel.empty())
      check(api, api.AddNameExpression(prog, req.kernel.c_str()), "hiprtcAddNameExpression");
    std::vector<std::string> opts = base_options(Vendor::kAmd, req.arch);
    opts.insert(opts.end(), req.options.begin(), req.options.end());
    const std::vector<const char*> opt_ptrs = c_strs(opts);

    hiprtcResult status = api.CompileProgram(prog, int(opt_ptrs.size()), opt_ptrs.data());
    std::string log = program_log(api, prog);
    if (status != 0) {
      if (log.empty()) log = api.GetErrorString(status);
      throw make_compile_error("hipRTC", req, log);
    }

    CompileResult out;
    out.arch = req.arch;
    out.threads = req.threads;
    out.log = log;
    size_t size = 0;
    check(api, api.GetCodeSize(prog, &size), "hiprtcGetCodeSize");
    out.binary.resize(size);
    check(api, api.GetCode(prog, out.binary.data()), "hiprtcGetCode");
    if (!req.kernel.empty()) {
      const char* lowered = nullptr;
      check(api, api.GetLoweredName(prog, req.kernel.c_str(), &lowered), "hiprtcGetLoweredName");
      out.lowered_name = lowered;
    }
    out.figures = parse_amdgpu_code_object(out.binary, out.lowered_name);
    return out;
  }
};

}  // namespace

Compiler& hiprtc_compiler() {
  static HiprtcCompiler compiler;
  return compiler;
}

}  // namespace ae::jit
