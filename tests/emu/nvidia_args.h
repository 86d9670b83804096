// What the NVIDIA emulator's mains (nvidia_fwd_main.cc, nvidia_bwd_main.cc) share: DIR/args.txt
// as "key value..." lines, and the captured tensors (DIR/buf<i>.bin, contiguous, their sizes
// under the key buf<i>).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "common/params.h"
#include "emu_io.h"

namespace emu {

struct Args {
  std::map<std::string, std::vector<double>> values;
  explicit Args(const std::string& path) {
    std::ifstream f(path);
    for (std::string line; std::getline(f, line);) {
      std::istringstream in(line);
      std::string key;
      in >> key;
      for (double x; in >> x;) values[key].push_back(x);
    }
  }
  bool has(const std::string& k) const { return values.count(k) > 0; }
  double real(const std::string& k, int at = 0) const {
    const auto it = values.find(k);
    if (it == values.end() || it->second.size() <= static_cast<size_t>(at)) {
      std::fprintf(stderr, "args.txt: no %s[%d]\n", k.c_str(), at);
      std::exit(2);
    }
    return it->second[at];
  }
  long long operator()(const std::string& k, int at = 0) const {
    return static_cast<long long>(real(k, at));
  }
  int count(const std::string& k) const { return has(k) ? static_cast<int>(values.at(k).size()) : 0; }
};

// The captured tensors into va (their bytes kept in bufs).
inline void read_buffers(const Args& a, const std::string& dir, std::vector<std::vector<char>>& bufs,
                         ae::VariantArgs& va) {
  const int nbuf = static_cast<int>(a("nbuf"));
  bufs.reserve(nbuf);
  for (int b = 0; b < nbuf; ++b) {
    const std::string key = "buf" + std::to_string(b);
    bufs.push_back(read(dir + "/" + key + ".bin"));
    va.buf[b].data = bufs.back().data();
    long long stride = 1;
    for (int d = a.count(key) - 1; d >= 0; --d) {
      va.buf[b].size[d] = a(key, d);
      va.buf[b].stride[d] = stride;
      stride *= va.buf[b].size[d];
    }
  }
}

// A tensor map as the TMA stand-in reads it (cuda_host.h TmaMap) from the keys <key>_dims,
// <key>_bytes and <key>_box.
inline ae::TmaDesc tma_map(const Args& a, const char* data, const std::string& key) {
  TmaMap m{data, {a(key + "_dims", 0), a(key + "_dims", 1), a(key + "_dims", 2), a(key + "_dims", 3)},
           {a(key + "_bytes", 0), a(key + "_bytes", 1), a(key + "_bytes", 2)},
           static_cast<int>(a(key + "_box"))};
  ae::TmaDesc d{};
  static_assert(sizeof(m) <= sizeof(d), "TmaDesc");
  std::memcpy(&d, &m, sizeof(m));
  return d;
}

}  // namespace emu
