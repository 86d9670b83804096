#include "jit/hash.h"

#define XXH_INLINE_ALL
#include "xxhash/xxhash.h"

namespace ae::jit {

std::string Hash128::hex() const {
  static const char digits[] = "0123456789abcdef";
  std::string out(32, '0');
  for (int i = 0; i < 16; ++i) {
    out[15 - i] = digits[(hi >> (4 * i)) & 15];
    out[31 - i] = digits[(lo >> (4 * i)) & 15];
  }
  return out;
}

bool Hash128::from_hex(std::string_view text, Hash128* out) {
  if (text.size() != 32) return false;
  uint64_t parts[2] = {0, 0};
  for (size_t i = 0; i < 32; ++i) {
    char c = text[i];
    int v = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (v < 0) return false;
    parts[i / 16] = (parts[i / 16] << 4) | uint64_t(v);
  }
  out->hi = parts[0];
  out->lo = parts[1];
  return true;
}

Hash128 hash128(const void* data, size_t size) {
  XXH128_hash_t h = XXH3_128bits(data, size);
  return Hash128{h.low64, h.high64};
}

Hasher::Hasher() : state_(XXH3_createState()) {
  XXH3_128bits_reset(static_cast<XXH3_state_t*>(state_));
}
Hasher::~Hasher() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }

void Hasher::update(const void* data, size_t size) {
  XXH3_128bits_update(static_cast<XXH3_state_t*>(state_), data, size);
}

Hasher& Hasher::add(std::string_view piece) {
  uint64_t n = piece.size();
  update(&n, sizeof n);
  update(piece.data(), piece.size());
  return *this;
}

Hasher& Hasher::add(const Hash128& h) {
  update(&h.lo, sizeof h.lo);
  update(&h.hi, sizeof h.hi);
  return *this;
}

Hasher& Hasher::add(int64_t v) {
  update(&v, sizeof v);
  return *this;
}

Hash128 Hasher::finish() const {
  XXH128_hash_t h = XXH3_128bits_digest(static_cast<XXH3_state_t*>(state_));
  return Hash128{h.low64, h.high64};
}

}  // namespace ae::jit
