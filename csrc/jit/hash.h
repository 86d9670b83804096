// 128-bit content hashes (XXH3-128): cache keys, header digests, entry checksums.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace ae::jit {

struct Hash128 {
  uint64_t lo = 0, hi = 0;
  bool operator==(const Hash128& o) const { return lo == o.lo && hi == o.hi; }
  bool operator!=(const Hash128& o) const { return !(*this == o); }
  std::string hex() const;  // 32 lowercase hex digits, hi first
  // Parses hex(); false on anything else.
  static bool from_hex(std::string_view text, Hash128* out);
};

Hash128 hash128(const void* data, size_t size);

// Streaming hasher. add() prefixes each piece with its length, so ("ab","c") != ("a","bc").
class Hasher {
 public:
  Hasher();
  ~Hasher();
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;
  Hasher& add(std::string_view piece);
  Hasher& add(const Hash128& h);
  Hasher& add(int64_t v);
  Hash128 finish() const;

 private:
  void update(const void* data, size_t size);
  void* state_;  // XXH3_state_t, kept opaque so xxhash.h stays out of headers
};

}  // namespace ae::jit

template <>
struct std::hash<ae::jit::Hash128> {
  size_t operator()(const ae::jit::Hash128& h) const noexcept { return size_t(h.lo ^ h.hi); }
};
