// The key under which a compiled kernel is cached, in memory and on disk.
#pragma once
#include <string>

#include "jit/compiler.h"
#include "jit/hash.h"

namespace ae::jit {

// XXH3-128 of everything that can change the binary or its metadata: the source, every
// header (names and contents, via its digest), the kernel name expression, the engine's base
// options and the request's, the arch, the block size, the compiler's version and
// AE_VERSION. Any change gives another key.
Hash128 cache_key(const CompileRequest& request, const HeaderSet& headers,
                  const std::string& compiler_version);

}  // namespace ae::jit
