// What the emulator's mains share: the kernels' LDS (their `extern __shared__ char lds[]`,
// defined here: one main per binary includes this) and the files through which the Python
// tests pass tensors in and out.
#pragma once

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace ae::gfx90a {
alignas(16) char lds[65536];
}

namespace emu {

inline std::vector<char> read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
inline void write(const std::string& path, const void* data, size_t bytes) {
  std::ofstream(path, std::ios::binary).write(static_cast<const char*>(data), bytes);
}

}  // namespace emu
