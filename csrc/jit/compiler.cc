#include "jit/compiler.h"

#include "fmt/format.h"
#include "jit/errors.h"

namespace ae::jit {

Vendor vendor_of_arch(const std::string& arch) {
  if (arch.rfind("sm_", 0) == 0 && arch.size() > 3) return Vendor::kNvidia;
  if (arch.rfind("gfx", 0) == 0 && arch.size() > 3) return Vendor::kAmd;
  throw JitError(fmt::format(
      "attention_engine: unknown target arch '{}' (expected sm_XY[a] or gfxNNN)", arch));
}

std::string nvidia_arch(int major, int minor, bool arch_specific) {
  if (major < 7 || minor < 0 || minor > 9)
    throw JitError(fmt::format("attention_engine: unsupported compute capability {}.{}", major,
                               minor));
  // Arch-specific ("a") targets exist from 9.0 on; their code runs only on that exact CC.
  const char* suffix = (arch_specific && major >= 9) ? "a" : "";
  return fmt::format("sm_{}{}{}", major, minor, suffix);
}

Compiler& compiler_for_arch(const std::string& arch) {
  return vendor_of_arch(arch) == Vendor::kNvidia ? nvrtc_compiler() : hiprtc_compiler();
}

std::vector<std::string> base_options(Vendor vendor, const std::string& arch) {
  if (vendor == Vendor::kNvidia) {
    // -no-source-include: without it NVRTC also looks in the current folder, so a stray file
    // there could shadow an embedded header.
    return {"--gpu-architecture=" + arch, "-default-device", "--std=c++17", "-DNDEBUG",
            "-no-source-include", "-Xptxas=-v"};
  }
  return {"--offload-arch=" + arch, "-D__HIP_PLATFORM_AMD__", "-std=c++17", "-DNDEBUG", "-O3"};
}

std::string numbered_source(const std::string& source) {
  std::string out;
  size_t line = 1, start = 0;
  while (start < source.size()) {
    size_t end = source.find('\n', start);
    if (end == std::string::npos) end = source.size();
    fmt::format_to(std::back_inserter(out), "{:>5} | {}\n", line++,
                   std::string_view(source).substr(start, end - start));
    start = end + 1;
  }
  return out;
}

CompileError make_compile_error(const std::string& compiler, const CompileRequest& request,
                                const std::string& log, const std::string& log_path) {
  std::string numbered = numbered_source(request.source);
  std::string message = fmt::format(
      "attention_engine: {} could not compile kernel '{}' for {}{}\n"
      "--- compiler log ---\n{}\n--- source ({}) ---\n{}",
      compiler, request.kernel, request.arch,
      log_path.empty() ? "" : fmt::format(" (log and source saved to {})", log_path), log,
      request.file_name, numbered);
  return CompileError(message, log, numbered, log_path);
}

}  // namespace ae::jit
