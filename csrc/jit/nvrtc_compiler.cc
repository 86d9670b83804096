// NVRTC behind the Compiler interface. libnvrtc is dlopen'ed on first use; the few functions
// used are declared here (no CUDA toolkit headers needed to build).
#include <locale.h>

#include <cstdlib>

#include "fmt/format.h"
#include "jit/compiler.h"
#include "jit/dynlib.h"
#include "jit/errors.h"
#include "jit/rtc_program.h"
#include "jit/cubin_info.h"
#include "jit/ptxas_log.h"

namespace ae::jit {
namespace {

using nvrtcProgram = void*;
using nvrtcResult = int;  // 0 == NVRTC_SUCCESS

struct NvrtcApi {
  DynLib lib;
  const char* (*GetErrorString)(nvrtcResult);
  nvrtcResult (*Version)(int*, int*);
  nvrtcResult (*CreateProgram)(nvrtcProgram*, const char*, const char*, int, const char* const*,
                               const char* const*);
  nvrtcResult (*DestroyProgram)(nvrtcProgram*);
  nvrtcResult (*CompileProgram)(nvrtcProgram, int, const char* const*);
  nvrtcResult (*GetProgramLogSize)(nvrtcProgram, size_t*);
  nvrtcResult (*GetProgramLog)(nvrtcProgram, char*);
  nvrtcResult (*GetCUBINSize)(nvrtcProgram, size_t*);
  nvrtcResult (*GetCUBIN)(nvrtcProgram, char*);
  nvrtcResult (*AddNameExpression)(nvrtcProgram, const char*);
  nvrtcResult (*GetLoweredName)(nvrtcProgram, const char*, const char**);
  std::string version;
};

std::unique_ptr<NvrtcApi> load_nvrtc() {
  auto a = std::make_unique<NvrtcApi>();
  std::vector<std::string> extra;
  for (const char* env : {"CUDA_HOME", "CUDA_PATH"})
    if (const char* root = std::getenv(env)) extra.push_back(std::string(root) + "/lib64");
  extra.push_back("/usr/local/cuda/lib64");
  a->lib = DynLib::open("NVRTC", "AE_NVRTC_PATH",
                        {"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"}, extra);
  const DynLib& l = a->lib;
  l.bind(a->GetErrorString, "nvrtcGetErrorString");
  l.bind(a->Version, "nvrtcVersion");
  l.bind(a->CreateProgram, "nvrtcCreateProgram");
  l.bind(a->DestroyProgram, "nvrtcDestroyProgram");
  l.bind(a->CompileProgram, "nvrtcCompileProgram");
  l.bind(a->GetProgramLogSize, "nvrtcGetProgramLogSize");
  l.bind(a->GetProgramLog, "nvrtcGetProgramLog");
  l.bind(a->GetCUBINSize, "nvrtcGetCUBINSize");
  l.bind(a->GetCUBIN, "nvrtcGetCUBIN");
  l.bind(a->AddNameExpression, "nvrtcAddNameExpression");
  l.bind(a->GetLoweredName, "nvrtcGetLoweredName");
  int major = 0, minor = 0;
  a->Version(&major, &minor);
  a->version = fmt::format("nvrtc {}.{} {}", major, minor, l.fingerprint());
  return a;
}

const NvrtcApi& nvrtc() {
  static LazyApi<NvrtcApi> api;
  return api.get(load_nvrtc);
}

void check(const NvrtcApi& api, nvrtcResult r, const char* what) {
  if (r != 0)
    throw JitError(fmt::format("attention_engine: {} failed: {}", what, api.GetErrorString(r)));
}

// NVRTC before 12.6.2 could leave the calling thread's locale changed; put it back.
class LocaleGuard {
 public:
  LocaleGuard() : saved_(uselocale(locale_t(0))) {}
  ~LocaleGuard() { uselocale(saved_); }

 private:
  locale_t saved_;
};

class NvrtcCompiler final : public Compiler {
 public:
  Vendor vendor() const override { return Vendor::kNvidia; }
  std::string version() override { return nvrtc().version; }

  CompileResult compile(const CompileRequest& req, const HeaderSet& headers) override {
    const NvrtcApi& api = nvrtc();
    std::vector<const char*> names = headers.name_ptrs(), texts = headers.content_ptrs();
    nvrtcProgram prog = nullptr;
    check(api,
          api.CreateProgram(&prog, req.source.c_str(), req.file_name.c_str(), int(names.size()),
                            texts.data(), names.data()),
          "nvrtcCreateProgram");
    struct Destroy {
      const NvrtcApi& api;
      nvrtcProgram& p;
      ~Destroy() { api.DestroyProgram(&p); }
    } destroy{api, prog};

    if (!req.kernel.empty())
      check(api, api.AddNameExpression(prog, req.kernel.c_str()), "nvrtcAddNameExpression");
    std::vector<std::string> opts = base_options(Vendor::kNvidia, req.arch);
    opts.insert(opts.end(), req.options.begin(), req.options.end());
    const std::vector<const char*> opt_ptrs = c_strs(opts);

    nvrtcResult status;
    {
      LocaleGuard guard;
      status = api.CompileProgram(prog, int(opt_ptrs.size()), opt_ptrs.data());
    }
    std::string log = program_log(api, prog);
    if (status != 0) {
      if (log.empty()) log = api.GetErrorString(status);
      throw make_compile_error("NVRTC", req, log);
    }

    CompileResult out;
    out.arch = req.arch;
    out.threads = req.threads;
    out.log = log;
    size_t size = 0;
    check(api, api.GetCUBINSize(prog, &size), "nvrtcGetCUBINSize");
    out.binary.resize(size);
    check(api, api.GetCUBIN(prog, out.binary.data()), "nvrtcGetCUBIN");
    if (!req.kernel.empty()) {
      const char* lowered = nullptr;
      check(api, api.GetLoweredName(prog, req.kernel.c_str(), &lowered), "nvrtcGetLoweredName");
      out.lowered_name = lowered;  // owned by prog: copy before it is destroyed
    }
    // The H200 machine's NVRTC (13.0, from PyPI) leaves ptxas's -v lines out of the log for
    // PTX it has built before (a cache below NVRTC, it seems: bench/RESULTS.md); then the
    // cubin's own records give the figures.
    out.figures = parse_ptxas_log(out.log, out.lowered_name);
    if (out.figures.registers < 0 || out.figures.spill_stores < 0)  // no ptxas lines
      out.figures = figures_from_cubin(out.binary, out.lowered_name);
    return out;
  }
};

}  // namespace

Compiler& nvrtc_compiler() {
  static NvrtcCompiler compiler;
  return compiler;
}

}  // namespace ae::jit
