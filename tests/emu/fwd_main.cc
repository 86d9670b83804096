// Runs a generated gfx90a forward (compiled with it, on the host, over tests/emu/hip_host.h)
// on inputs from files, as the planner and the runner would launch it: the test writes
// DIR/args.txt and the tensors, this writes DIR/o.bin and DIR/lse.bin (and the split-KV
// partials). Masked variants get a block-state table of partial blocks (every block applies
// the mask).
#include <cstdio>
#include <fstream>
#include <string>

#include "common/params.h"
#include "emu_io.h"

extern "C" void ae_fwd(const ae::AttnParams p, const ae::VariantArgs va);

using emu::read;
using emu::write;

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string dir = argv[1];
  std::ifstream args(dir + "/args.txt");
  long long B, Hq, Hkv, Sq, Skv, Dqk, Dv, block_m, block_n, threads, splits, masked, nbuf;
  double scale;
  args >> B >> Hq >> Hkv >> Sq >> Skv >> Dqk >> Dv >> block_m >> block_n >> threads >> splits >>
      masked >> scale >> nbuf;
  std::vector<char> q = read(dir + "/q.bin"), k = read(dir + "/k.bin"), v = read(dir + "/v.bin");
  std::vector<std::vector<char>> bufs;
  ae::VariantArgs va{};
  bufs.reserve(nbuf);
  for (int i = 0; i < nbuf; ++i) {  // rank, then the sizes; contiguous
    int rank;
    args >> rank;
    bufs.push_back(read(dir + "/buf" + std::to_string(i) + ".bin"));
    va.buf[i].data = bufs.back().data();
    for (int d = 0; d < rank; ++d) args >> va.buf[i].size[d];
    long long stride = 1;
    for (int d = rank - 1; d >= 0; --d) va.buf[i].stride[d] = stride, stride *= va.buf[i].size[d];
  }
  std::vector<unsigned short> o(B * Hq * Sq * Dv);
  std::vector<float> lse(B * Hq * Sq), o_part(splits * B * Hq * Sq * Dv), lse_part(splits * B * Hq * Sq);

  ae::AttnParams p{};
  p.q = q.data(), p.k = k.data(), p.v = v.data(), p.o = o.data(), p.lse = lse.data();
  auto strides = [](long long (&s)[3], long long H, long long S, long long D) {
    s[0] = H * S * D, s[1] = S * D, s[2] = D;
  };
  strides(p.q_stride, Hq, Sq, Dqk);
  strides(p.k_stride, Hkv, Skv, Dqk);
  strides(p.v_stride, Hkv, Skv, Dv);
  strides(p.o_stride, Hq, Sq, Dv);
  p.batch = B, p.q_heads = Hq, p.kv_heads = Hkv, p.group = Hq / Hkv, p.q_len = Sq, p.kv_len = Skv;
  p.scale = scale, p.scale_log2 = scale * 1.4426950408889634;
  p.n_q_blocks = (Sq + block_m - 1) / block_m, p.n_kv_blocks = (Skv + block_n - 1) / block_n;
  p.head_group = 1, p.d_qk = Dqk, p.d_v = Dv;
  std::vector<unsigned char> states(p.n_q_blocks * p.n_kv_blocks, 1);  // all partial
  if (masked) p.block_state = states.data();
  p.kv_splits = splits;
  if (splits > 1) {
    p.kv_split_blocks = (p.n_kv_blocks + splits - 1) / splits;
    p.o_part = o_part.data(), p.lse_part = lse_part.data();
  }
  gridDim = {static_cast<unsigned>(p.n_q_blocks), static_cast<unsigned>(Hq),
             static_cast<unsigned>(B * splits)};
  for (unsigned z = 0; z < gridDim.z; ++z)
    for (unsigned y = 0; y < gridDim.y; ++y)
      for (unsigned x = 0; x < gridDim.x; ++x) {
        blockIdx = {x, y, z};
        emu::run_block(static_cast<int>(threads), [&] { ae_fwd(p, va); });
      }
  write(dir + "/o.bin", o.data(), o.size() * 2);
  write(dir + "/lse.bin", lse.data(), lse.size() * 4);
  write(dir + "/o_part.bin", o_part.data(), o_part.size() * 4);
  write(dir + "/lse_part.bin", lse_part.data(), lse_part.size() * 4);
  return 0;
}
