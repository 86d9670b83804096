#include "jit/amdgpu_metadata.h"

#include <elf.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <vector>

namespace ae::jit {
namespace {

constexpr uint32_t kNtAmdgpuMetadata = 32;

// Just enough MessagePack to walk the metadata: maps with string keys, arrays, strings and
// integers; everything else is skipped.
struct Value {
  enum Kind { kOther, kInt, kStr, kArr, kMap } kind = kOther;
  int64_t i = 0;
  std::string s;
  std::vector<Value> items;                        // kArr
  std::vector<std::pair<std::string, Value>> map;  // kMap (non-string keys dropped)

  const Value* get(const char* key) const {
    for (const auto& kv : map)
      if (kv.first == key) return &kv.second;
    return nullptr;
  }
};

class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), end_(p + n) {}
  bool ok() const { return ok_; }

  Value read(int depth = 0) {
    Value v;
    if (depth > 32 || !need(1)) return fail();
    uint8_t t = *p_++;
    if (t <= 0x7f) return integer(t);
    if (t >= 0xe0) return integer(int8_t(t));
    if ((t & 0xe0) == 0xa0) return string(t & 0x1f);
    if ((t & 0xf0) == 0x90) return array(t & 0x0f, depth);
    if ((t & 0xf0) == 0x80) return mapping(t & 0x0f, depth);
    switch (t) {
      case 0xc0: case 0xc2: case 0xc3: return v;                  // nil, false, true
      case 0xcc: return integer(int64_t(uint_n(1)));
      case 0xcd: return integer(int64_t(uint_n(2)));
      case 0xce: return integer(int64_t(uint_n(4)));
      case 0xcf: return integer(int64_t(uint_n(8)));
      case 0xd0: return integer(int8_t(uint_n(1)));
      case 0xd1: return integer(int16_t(uint_n(2)));
      case 0xd2: return integer(int32_t(uint_n(4)));
      case 0xd3: return integer(int64_t(uint_n(8)));
      case 0xca: skip(4); return v;                               // float32
      case 0xcb: skip(8); return v;                               // float64
      case 0xd9: return string(uint_n(1));
      case 0xda: return string(uint_n(2));
      case 0xdb: return string(uint_n(4));
      case 0xc4: skip(uint_n(1)); return v;                       // bin
      case 0xc5: skip(uint_n(2)); return v;
      case 0xc6: skip(uint_n(4)); return v;
      case 0xdc: return array(uint_n(2), depth);
      case 0xdd: return array(uint_n(4), depth);
      case 0xde: return mapping(uint_n(2), depth);
      case 0xdf: return mapping(uint_n(4), depth);
      default: return fail();                                     // ext types: not expected
    }
  }

 private:
  bool need(size_t n) {
    if (!ok_ || size_t(end_ - p_) < n) ok_ = false;
    return ok_;
  }
  Value fail() { ok_ = false; return Value{}; }
  uint64_t uint_n(int n) {
    if (!need(n)) return 0;
    uint64_t v = 0;
    for (int k = 0; k < n; ++k) v = (v << 8) | *p_++;  // big-endian
    return v;
  }
  void skip(uint64_t n) { if (need(n)) p_ += n; }
  Value integer(int64_t i) { Value v; v.kind = Value::kInt; v.i = i; return v; }
  Value string(uint64_t n) {
    Value v;
    if (!need(n)) return fail();
    v.kind = Value::kStr;
    v.s.assign(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return v;
  }
  Value array(uint64_t n, int depth) {
    Value v;
    v.kind = Value::kArr;
    for (uint64_t k = 0; k < n && ok_; ++k) v.items.push_back(read(depth + 1));
    return v;
  }
  Value mapping(uint64_t n, int depth) {
    Value v;
    v.kind = Value::kMap;
    for (uint64_t k = 0; k < n && ok_; ++k) {
      Value key = read(depth + 1);
      Value val = read(depth + 1);
      if (key.kind == Value::kStr) v.map.emplace_back(std::move(key.s), std::move(val));
    }
    return v;
  }

  const uint8_t* p_;
  const uint8_t* end_;
  bool ok_ = true;
};

// The metadata note's payload, or empty.
std::string metadata_note(const std::string& elf) {
  if (elf.size() < sizeof(Elf64_Ehdr) || std::memcmp(elf.data(), ELFMAG, SELFMAG) != 0 ||
      elf[EI_CLASS] != ELFCLASS64)
    return {};
  Elf64_Ehdr eh;
  std::memcpy(&eh, elf.data(), sizeof eh);
  for (unsigned k = 0; k < eh.e_shnum; ++k) {
    size_t off = eh.e_shoff + size_t(k) * eh.e_shentsize;
    if (eh.e_shentsize < sizeof(Elf64_Shdr) || off + sizeof(Elf64_Shdr) > elf.size()) break;
    Elf64_Shdr sh;
    std::memcpy(&sh, elf.data() + off, sizeof sh);
    if (sh.sh_type != SHT_NOTE || sh.sh_offset + sh.sh_size > elf.size()) continue;
    size_t pos = sh.sh_offset, end = sh.sh_offset + sh.sh_size;
    while (pos + sizeof(Elf64_Nhdr) <= end) {
      Elf64_Nhdr nh;
      std::memcpy(&nh, elf.data() + pos, sizeof nh);
      size_t name_at = pos + sizeof nh;
      size_t desc_at = name_at + ((nh.n_namesz + 3) & ~size_t(3));
      size_t next = desc_at + ((nh.n_descsz + 3) & ~size_t(3));
      if (desc_at + nh.n_descsz > end) break;
      if (nh.n_type == kNtAmdgpuMetadata &&
          elf.compare(name_at, nh.n_namesz > 0 ? nh.n_namesz - 1 : 0, "AMDGPU") == 0)
        return elf.substr(desc_at, nh.n_descsz);
      pos = next;
    }
  }
  return {};
}

int int_field(const Value& kernel, const char* key) {
  const Value* v = kernel.get(key);
  return v && v->kind == Value::kInt ? int(v->i) : -1;
}

}  // namespace

KernelFigures parse_amdgpu_code_object(const std::string& elf, const std::string& kernel) {
  std::string note = metadata_note(elf);
  if (note.empty()) return {};
  Reader reader(reinterpret_cast<const uint8_t*>(note.data()), note.size());
  Value root = reader.read();
  const Value* kernels = reader.ok() ? root.get("amdhsa.kernels") : nullptr;
  if (!kernels || kernels->kind != Value::kArr || kernels->items.empty()) return {};
  const Value* chosen = kernels->items.size() == 1 ? &kernels->items[0] : nullptr;
  for (const auto& k : kernels->items) {
    const Value* name = k.get(".name");
    if (name && name->kind == Value::kStr && name->s == kernel) chosen = &k;
  }
  if (!chosen) return {};
  KernelFigures f;
  f.registers = int_field(*chosen, ".vgpr_count");
  f.smem_bytes = int_field(*chosen, ".group_segment_fixed_size");
  f.spill_stores = int_field(*chosen, ".vgpr_spill_count");
  f.spill_loads = int_field(*chosen, ".sgpr_spill_count");
  f.stack_frame = int_field(*chosen, ".private_segment_fixed_size");
  f.agprs = int_field(*chosen, ".agpr_count");
  f.sgprs = int_field(*chosen, ".sgpr_count");
  return f;
}

}  // namespace ae::jit
