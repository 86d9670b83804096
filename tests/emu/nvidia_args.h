// What the NVIDIA emulator's mains (nvidia_fwd_main.cc, nvidia_bwd_main.cc) share: DIR/args.txt
// as "key value..." lines, the captured tensors (DIR/buf<i>.bin, contiguous, their sizes under
// the key buf<i>), the kernel's shared-memory array (AE_EMU_SMEM_NS / AE_EMU_SMEM_NAME: its
// namespace and name, ae::sm90::smem_raw unless given) and the block-state pass (the generated
// ae_block_state, where the test links one in).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "common/params.h"
#include "common/shapes.h"
#include "emu_io.h"

#ifndef AE_EMU_SMEM_NS
#define AE_EMU_SMEM_NS sm90
#define AE_EMU_SMEM_NAME smem_raw
#endif
namespace ae::AE_EMU_SMEM_NS {
thread_local __attribute__((aligned(1024))) char AE_EMU_SMEM_NAME[232448];  // its shared memory
}
#define AE_EMU_SMEM ae::AE_EMU_SMEM_NS::AE_EMU_SMEM_NAME

extern "C" __attribute__((weak)) void ae_block_state(const ae::AttnParams p, const ae::VariantArgs va,
                                                     const ae::BlockStateParams bs);
extern "C" __attribute__((weak)) void ae_block_state_blocks(const ae::AttnParams p,
                                                            const ae::VariantArgs va,
                                                            const ae::BlockStateParams bs);

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

// The block-state pass into `states`, a table per batch (nb > 1) and per head (nh > 1), and p
// pointed at it: false where no block-state kernel is linked in. A mask looking up a block
// tensor (ae_block_state_blocks linked in) runs as the planner has it: the rest's pass (its
// ae_block_state, where the rest has a mask) into a table of its own, then the table from the
// tensor and that one.
// rest_b / rest_h: the rest's table per batch / per head (as the plan has it; default: as the
// final one). half_m: the tables' half tiles (BlockStateParams::half_m; 0: none).
inline bool run_block_states(ae::AttnParams& p, const ae::VariantArgs& va, int block_m, int block_n,
                             long long nb, long long nh, std::vector<unsigned char>& states,
                             int rest_b = -1, int rest_h = -1, int half_m = 0, int half_n = 0) {
  if (!ae_block_state && !ae_block_state_blocks) return false;
  const long long tiles = static_cast<long long>(p.n_q_blocks) * p.n_kv_blocks;
  std::vector<unsigned char> rest;
  const bool rb = rest_b < 0 ? nb > 1 : rest_b > 0, rh = rest_h < 0 ? nh > 1 : rest_h > 0;
  ae::BlockStateParams bs{nullptr, block_m, block_n, nb > 1, nh > 1, nullptr, rb, rh, half_m, half_n};
  p.state_stride_h = nh > 1 ? tiles : 0;
  p.state_stride_b = nb > 1 ? nh * tiles : 0;
  if (ae_block_state) {  // the mask's table (or, before ae_block_state_blocks, the rest's)
    const bool rest_pass = ae_block_state_blocks != nullptr;
    std::vector<unsigned char>& table = rest_pass ? rest : states;
    const long long tables = rest_pass ? (rb ? nb : 1) * (rh ? nh : 1) : nb * nh;
    table.assign(tables * tiles, 0xff);
    bs.state = table.data();
    if (rest_pass) bs.per_batch = rb, bs.per_head = rh;
    gridDim = {static_cast<unsigned>(p.n_kv_blocks), static_cast<unsigned>(p.n_q_blocks),
               static_cast<unsigned>(tables)};
    for (unsigned z = 0; z < gridDim.z; ++z)
      for (unsigned y = 0; y < gridDim.y; ++y)
        for (unsigned x = 0; x < gridDim.x; ++x) {
          blockIdx = {x, y, z};
          run_block(ae::kBlockStateThreads, [&] { ae_block_state(p, va, bs); });
        }
  }
  if (ae_block_state_blocks) {
    states.assign(nb * nh * tiles, 0xff);
    bs.state = states.data();
    bs.per_batch = nb > 1, bs.per_head = nh > 1;
    bs.rest = ae_block_state ? rest.data() : nullptr;
    gridDim = {static_cast<unsigned>((nb * nh * tiles + ae::kBlockStateThreads - 1) /
                                     ae::kBlockStateThreads), 1, 1};
    for (unsigned x = 0; x < gridDim.x; ++x) {
      blockIdx = {x, 0, 0};
      run_block(ae::kBlockStateThreads, [&] { ae_block_state_blocks(p, va, bs); });
    }
  }
  p.block_state = states.data();
  return true;
}

}  // namespace emu
