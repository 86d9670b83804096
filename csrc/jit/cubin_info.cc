#include "jit/cubin_info.h"

#include <cstdint>
#include <cstring>
#include <map>
#include <vector>

namespace ae::jit {
namespace {

template <class T>
bool read(const std::string& b, size_t off, T* out) {
  if (off > b.size() || b.size() - off < sizeof(T)) return false;
  std::memcpy(out, b.data() + off, sizeof(T));
  return true;
}

struct Section {
  uint32_t name = 0, type = 0, link = 0;
  uint64_t off = 0, size = 0, entsize = 0;
};

// EIATTR ids and formats of .nv.info records (fmt, attr, then a u16 value, or for
// EIFMT_SVAL a u16 size and that many bytes).
constexpr uint8_t kSval = 4, kFrameSize = 0x11, kRegCount = 0x2f;

}  // namespace

KernelFigures figures_from_cubin(const std::string& b, const std::string& kernel) {
  KernelFigures none;
  // 64-bit little-endian ELF only (what NVRTC writes).
  if (b.size() < 64 || std::memcmp(b.data(), "\x7f" "ELF", 4) != 0 || b[4] != 2 || b[5] != 1)
    return none;
  uint64_t shoff = 0;
  uint16_t shentsize = 0, shnum = 0, shstrndx = 0;
  if (!read(b, 0x28, &shoff) || !read(b, 0x3a, &shentsize) || !read(b, 0x3c, &shnum) ||
      !read(b, 0x3e, &shstrndx) || shentsize < 64 || shstrndx >= shnum)
    return none;
  std::vector<Section> secs(shnum);
  for (uint16_t i = 0; i < shnum; ++i) {
    const uint64_t at = shoff + uint64_t(i) * shentsize;
    Section& s = secs[i];
    if (!read(b, at, &s.name) || !read(b, at + 4, &s.type) || !read(b, at + 0x18, &s.off) ||
        !read(b, at + 0x20, &s.size) || !read(b, at + 0x28, &s.link) ||
        !read(b, at + 0x38, &s.entsize))
      return none;
    // SHT_NOBITS (8: static shared memory, .bss) takes no bytes in the file.
    if (s.type != 8 && (s.off > b.size() || b.size() - s.off < s.size)) return none;
  }
  auto cstr = [&](const Section& strtab, uint32_t off) -> std::string {
    if (off >= strtab.size) return {};
    const char* p = b.data() + strtab.off + off;
    return std::string(p, strnlen(p, strtab.size - off));
  };
  const Section* info = nullptr;
  const Section* symtab = nullptr;
  for (const Section& s : secs) {
    const std::string name = cstr(secs[shstrndx], s.name);
    if (name == ".nv.info") info = &s;
    if (name == ".symtab") symtab = &s;
  }
  if (!info || !symtab || symtab->link >= shnum || symtab->entsize < 24) return none;

  // Records per function symbol index.
  std::map<uint32_t, KernelFigures> by_symbol;
  const uint64_t info_end = info->off + info->size;
  for (uint64_t p = info->off; p + 4 <= info_end;) {
    const uint8_t fmt = static_cast<uint8_t>(b[p]), attr = static_cast<uint8_t>(b[p + 1]);
    uint16_t size = 0;
    if (fmt != kSval) {
      p += 4;
      continue;
    }
    if (!read(b, p + 2, &size) || p + 4 + size > info_end) return none;
    uint32_t sym = 0, value = 0;
    if (size >= 8 && read(b, p + 4, &sym) && read(b, p + 8, &value)) {
      if (attr == kRegCount) by_symbol[sym].registers = static_cast<int>(value);
      if (attr == kFrameSize) by_symbol[sym].stack_frame = static_cast<int>(value);
    }
    p += 4 + size;
  }
  const KernelFigures* chosen = nullptr;
  for (const auto& [sym, f] : by_symbol) {
    uint32_t name_off = 0;
    if (uint64_t(sym) < symtab->size / symtab->entsize &&
        read(b, symtab->off + uint64_t(sym) * symtab->entsize, &name_off) &&
        cstr(secs[symtab->link], name_off) == kernel)
      chosen = &f;
  }
  if (!chosen && by_symbol.size() == 1) chosen = &by_symbol.begin()->second;
  if (!chosen || chosen->registers < 0) return none;
  KernelFigures f = *chosen;
  if (f.stack_frame < 0) f.stack_frame = 0;  // no record: no frame
  f.spill_stores = f.spill_loads = f.stack_frame;
  return f;
}

}  // namespace ae::jit
