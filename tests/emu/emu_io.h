// What the emulator's mains share: the kernels' LDS (their `extern __shared__ char lds[]`,
// defined here: one main per binary includes this) and the files through which the Python
// tests pass tensors in and out.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
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

// A tensor's bytes ending where 64 MB of inaccessible memory begin: a kernel that reads or
// writes past its end faults (packed sequences' last rows, a page pool's last page). Never
// freed.
inline char* guarded(size_t bytes) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE)), guard = size_t{64} << 20;
  const size_t room = (bytes + page - 1) / page * page;
  char* base = static_cast<char*>(
      mmap(nullptr, room + guard, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (base == MAP_FAILED) std::abort();
  mprotect(base + room, guard, PROT_NONE);
  return base + room - bytes;
}
inline char* read_guarded(const std::string& path) {
  const std::vector<char> v = read(path);
  char* at = guarded(v.size());
  std::memcpy(at, v.data(), v.size());
  return at;
}

// The optional lines past args.txt's positional values: "key v1 v2 ..." each.
inline std::map<std::string, std::vector<long long>> keyed(std::istream& in) {
  std::map<std::string, std::vector<long long>> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string key;
    if (!(words >> key)) continue;
    long long x;
    while (words >> x) out[key].push_back(x);
  }
  return out;
}

}  // namespace emu
