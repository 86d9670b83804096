// Whether a disk cache entry may stand in for a compile of a request: its metadata must be
// what that compile would have produced. The checksum (cache_entry.h) detects damage; this
// detects an entry written for something else (another kernel's binary, made-up launch
// figures). Neither proves who wrote the entry: the folder's ownership and mode do that
// (disk_cache.h).
#pragma once
#include <string>

#include "jit/compiler.h"

namespace ae::jit {

// Empty when `result` (read from disk) fits `request`, else why not.
std::string entry_mismatch(const CompileRequest& request, const CompileResult& result);

}  // namespace ae::jit
