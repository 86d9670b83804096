// The bytes of one disk cache entry (one file, <cache>/kernels/<key>.aek):
//   "AEJIT1\n\0"                8 bytes, magic + format version
//   u64 metadata size, u64 binary size        (little-endian)
//   16 bytes XXH3-128 of metadata + binary    (hi, lo as two little-endian u64)
//   metadata: JSON {key, engine, arch, kernel, threads, registers, smem_bytes, spill_stores,
//             spill_loads, stack_frame, log}
//   binary: the cubin or code object
// The checksum makes a truncated or damaged file (crash mid-write, full disk, bit rot) show
// up as a miss, so it is rebuilt; no locks are needed to read.
#pragma once
#include <optional>
#include <string>

#include "jit/compiler.h"
#include "jit/hash.h"

namespace ae::jit {

std::string encode_cache_entry(const Hash128& key, const CompileResult& result);
// Whether `head` starts with the entry format's magic (cache admin: what it may remove).
bool has_cache_entry_magic(const std::string& head);
// nullopt when the bytes are not a whole, intact entry for `key`.
std::optional<CompileResult> decode_cache_entry(const Hash128& key, const std::string& bytes);

}  // namespace ae::jit
