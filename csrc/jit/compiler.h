// One interface over NVRTC and hipRTC: a generated source in, a loadable binary out.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "jit/errors.h"
#include "jit/headers.h"

namespace ae::jit {

enum class Vendor { kNvidia, kAmd };

// "sm_80", "sm_90", "sm_90a" -> kNvidia; "gfx90a", "gfx942", "gfx90a:xnack-" -> kAmd.
// Throws JitError for anything else.
Vendor vendor_of_arch(const std::string& arch);

// NVIDIA compute capability -> arch name: (8, 0) -> "sm_80", (9, 0) -> "sm_90", or "sm_90a"
// when arch_specific (wgmma, setmaxnreg, TMA multicast: code that runs only on 9.0).
std::string nvidia_arch(int major, int minor, bool arch_specific = false);

struct CompileRequest {
  std::string source;                 // the generated translation unit
  std::string kernel;                 // name expression: "ae_fwd" (extern "C") or "f<64, 2>"
  std::string arch;                   // explicit target, see vendor_of_arch
  std::vector<std::string> options;   // added after the engine's own, e.g. "-DAE_HEAD_DIM=128"
  std::string file_name = "ae_kernel.cu";  // shown in the compiler's messages
  int threads = 0;                    // block size, if the caller knows it: kept in metadata
  // Includable headers; null means template_headers().
  std::shared_ptr<const HeaderSet> headers;
};

// Resource use of the kernel as reported by the compiler; -1 where unknown.
// NVIDIA: parsed from the ptxas -v log (bytes). AMD: from the code object's metadata
// (spill figures there are counts of spilled registers, not bytes).
struct KernelFigures {
  int registers = -1;     // per thread (VGPRs on AMD)
  int smem_bytes = -1;    // static shared memory / LDS
  int spill_stores = -1;  // bytes (NVIDIA) or VGPR spills (AMD)
  int spill_loads = -1;   // bytes (NVIDIA) or SGPR spills (AMD)
  int stack_frame = -1;   // bytes (private segment on AMD)
  int agprs = -1;         // AMD: accumulation VGPRs (gfx90a: they share the 512 per SIMD lane)
  int sgprs = -1;         // AMD: scalar registers
  bool spills() const { return spill_stores > 0 || spill_loads > 0; }
};

struct CompileResult {
  std::string arch;
  std::string binary;        // cubin (NVIDIA) or code object (AMD)
  std::string lowered_name;  // symbol to look up in the loaded module
  KernelFigures figures;
  int threads = 0;
  std::string log;           // the compiler's log, warnings and -v output included
};

class Compiler {
 public:
  virtual ~Compiler() = default;
  virtual Vendor vendor() const = 0;
  // Identifies the compiler build: part of every cache key (loads the library if needed).
  virtual std::string version() = 0;
  // Throws CompileError when the source does not compile, JitError when the compiler
  // cannot be loaded. `headers` is the resolved request.headers.
  virtual CompileResult compile(const CompileRequest& request, const HeaderSet& headers) = 0;
};

// The process-wide NVRTC and hipRTC compilers (each loads its library on first use).
Compiler& nvrtc_compiler();
Compiler& hiprtc_compiler();
Compiler& compiler_for_arch(const std::string& arch);

// The options every compile gets before request.options (arch included).
std::vector<std::string> base_options(Vendor vendor, const std::string& arch);

// "   1 | first line" ...: for error messages.
std::string numbered_source(const std::string& source);

// The CompileError for a failed compile: compiler log + numbered source. The kernel cache
// adds the path of the file it writes them to (see KernelCache).
CompileError make_compile_error(const std::string& compiler, const CompileRequest& request,
                                const std::string& log, const std::string& log_path = "");

}  // namespace ae::jit
