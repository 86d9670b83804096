#include "jit/cache_entry.h"

#include <cstring>

#include "nlohmann/json.hpp"
#include "version.h"

namespace ae::jit {
namespace {

constexpr char kMagic[8] = {'A', 'E', 'J', 'I', 'T', '1', '\n', '\0'};
constexpr size_t kHeaderSize = 8 + 8 + 8 + 16;

void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(char((v >> (8 * i)) & 0xff));
}

uint64_t get_u64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

Hash128 checksum(const std::string& meta, const std::string& binary) {
  Hasher h;
  h.add(meta).add(binary);
  return h.finish();
}

}  // namespace

bool has_cache_entry_magic(const std::string& head) {
  return head.size() >= sizeof kMagic && std::memcmp(head.data(), kMagic, sizeof kMagic) == 0;
}

std::string encode_cache_entry(const Hash128& key, const CompileResult& r) {
  nlohmann::json meta = {
      {"key", key.hex()},
      {"engine", AE_VERSION},
      {"arch", r.arch},
      {"kernel", r.lowered_name},
      {"threads", r.threads},
      {"registers", r.figures.registers},
      {"smem_bytes", r.figures.smem_bytes},
      {"spill_stores", r.figures.spill_stores},
      {"spill_loads", r.figures.spill_loads},
      {"stack_frame", r.figures.stack_frame},
      // Logs may hold bytes that are not UTF-8 (source excerpts): replace, never throw.
      {"log", r.log},
  };
  std::string meta_text = meta.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  Hash128 sum = checksum(meta_text, r.binary);
  std::string out(kMagic, sizeof kMagic);
  put_u64(out, meta_text.size());
  put_u64(out, r.binary.size());
  put_u64(out, sum.hi);
  put_u64(out, sum.lo);
  out += meta_text;
  out += r.binary;
  return out;
}

std::optional<CompileResult> decode_cache_entry(const Hash128& key, const std::string& bytes) {
  if (bytes.size() < kHeaderSize || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0)
    return std::nullopt;
  uint64_t meta_size = get_u64(bytes.data() + 8), bin_size = get_u64(bytes.data() + 16);
  if (meta_size > bytes.size() || bin_size > bytes.size() ||
      kHeaderSize + meta_size + bin_size != bytes.size())
    return std::nullopt;
  Hash128 stored{get_u64(bytes.data() + 32), get_u64(bytes.data() + 24)};
  std::string meta_text = bytes.substr(kHeaderSize, meta_size);
  std::string binary = bytes.substr(kHeaderSize + meta_size);
  if (checksum(meta_text, binary) != stored) return std::nullopt;

  nlohmann::json meta = nlohmann::json::parse(meta_text, nullptr, /*allow_exceptions=*/false);
  if (!meta.is_object() || meta.value("key", "") != key.hex()) return std::nullopt;
  try {
    CompileResult r;
    r.arch = meta.at("arch").get<std::string>();
    r.lowered_name = meta.at("kernel").get<std::string>();
    r.threads = meta.at("threads").get<int>();
    r.figures.registers = meta.at("registers").get<int>();
    r.figures.smem_bytes = meta.at("smem_bytes").get<int>();
    r.figures.spill_stores = meta.at("spill_stores").get<int>();
    r.figures.spill_loads = meta.at("spill_loads").get<int>();
    r.figures.stack_frame = meta.at("stack_frame").get<int>();
    r.log = meta.at("log").get<std::string>();
    r.binary = std::move(binary);
    return r;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

}  // namespace ae::jit
