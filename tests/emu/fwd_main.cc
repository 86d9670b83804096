// Runs a generated gfx90a forward (compiled with it, on the host, over tests/emu/hip_host.h)
// on inputs from files, as the planner and the runner would launch it: the test writes
// DIR/args.txt and the tensors, this writes DIR/o.bin and DIR/lse.bin (and the split-KV
// partials). Masked variants get a block-state table of partial blocks (every block applies
// the mask). Keyed lines after the positional values (emu::keyed) give other layouts:
//   q_stride / k_stride / v_stride / o_stride s0 s1 s2   strides (elements) other than dense
//   o_numel n, lse_numel n                               the outputs' sizes
//   kv_lens bytes      kv_lens.bin: per-batch key counts, int32 (4) or int64 (8)
//   varlen q_total     cu_q.bin, cu_k.bin: int32 cumulative lengths (VarlenLayout)
//   pages max_pages num_pages   table.bin: int32 [B, max_pages] (PagedLayout)
//   combine row_stats  the split-KV partials merged by the linked ae_fwd_combine
// q, k, v, o, the lengths and the table end where an inaccessible page begins (emu::guarded).
#include <cstdio>
#include <fstream>
#include <string>

#include "common/params.h"
#include "common/shapes.h"
#include "emu_io.h"

extern "C" void ae_fwd(const ae::AttnParams p, const ae::VariantArgs va);
extern "C" __attribute__((weak)) void ae_fwd_combine(const ae::AttnParams p);

using emu::read;
using emu::read_guarded;
using emu::write;

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string dir = argv[1];
  std::ifstream args(dir + "/args.txt");
  long long B, Hq, Hkv, Sq, Skv, Dqk, Dv, block_m, block_n, threads, splits, masked, nbuf;
  double scale;
  args >> B >> Hq >> Hkv >> Sq >> Skv >> Dqk >> Dv >> block_m >> block_n >> threads >> splits >>
      masked >> scale >> nbuf;
  const char* q = read_guarded(dir + "/q.bin");
  const char* k = read_guarded(dir + "/k.bin");
  const char* v = read_guarded(dir + "/v.bin");
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
  auto ext = emu::keyed(args);
  auto get = [&](const char* key, long long dflt) { return ext.count(key) ? ext[key][0] : dflt; };
  const long long o_numel = get("o_numel", B * Hq * Sq * Dv), lse_numel = get("lse_numel", B * Hq * Sq);
  auto* o = reinterpret_cast<unsigned short*>(emu::guarded(o_numel * 2));
  auto* lse = reinterpret_cast<float*>(emu::guarded(lse_numel * 4));
  std::vector<float> o_part(splits * B * Hq * Sq * Dv), lse_part(splits * B * Hq * Sq);

  ae::AttnParams p{};
  p.q = q, p.k = k, p.v = v, p.o = o, p.lse = lse;
  auto strides = [&](long long (&s)[3], const char* key, long long H, long long S, long long D) {
    s[0] = H * S * D, s[1] = S * D, s[2] = D;
    if (ext.count(key))
      for (int i = 0; i < 3; ++i) s[i] = ext[key].at(i);
  };
  strides(p.q_stride, "q_stride", Hq, Sq, Dqk);
  strides(p.k_stride, "k_stride", Hkv, Skv, Dqk);
  strides(p.v_stride, "v_stride", Hkv, Skv, Dv);
  strides(p.o_stride, "o_stride", Hq, Sq, Dv);
  p.batch = B, p.q_heads = Hq, p.kv_heads = Hkv, p.group = Hq / Hkv, p.q_len = Sq, p.kv_len = Skv;
  p.scale = scale, p.scale_log2 = scale * 1.4426950408889634;
  p.n_q_blocks = (Sq + block_m - 1) / block_m, p.n_kv_blocks = (Skv + block_n - 1) / block_n;
  p.head_group = 1, p.d_qk = Dqk, p.d_v = Dv;
  if (ext.count("kv_lens")) {
    p.kv_lens = read_guarded(dir + "/kv_lens.bin");
    p.kv_lens_stride = 1, p.kv_lens_int32 = ext["kv_lens"][0] == 4;
  }
  if (ext.count("varlen")) {
    p.cu_q = reinterpret_cast<const int*>(read_guarded(dir + "/cu_q.bin"));
    p.cu_k = reinterpret_cast<const int*>(read_guarded(dir + "/cu_k.bin"));
    p.q_total = ext["varlen"][0];
  }
  if (ext.count("pages")) {
    p.page_table = reinterpret_cast<const int*>(read_guarded(dir + "/table.bin"));
    p.max_pages = ext["pages"][0], p.page_table_stride = p.max_pages, p.num_pages = ext["pages"][1];
  }
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
  if (ext.count("combine")) {  // (the planner's add_kv_splits launch)
    if (!ae_fwd_combine || splits < 2) return 3;
    p.row_stats = static_cast<int>(ext["combine"][0]);
    const long long rows = B * Hq * Sq, per = ae::kCombineThreads / emu::kLanes;
    gridDim = {static_cast<unsigned>((rows + per - 1) / per), 1, 1};
    for (unsigned x = 0; x < gridDim.x; ++x) {
      blockIdx = {x, 0, 0};
      emu::run_block(ae::kCombineThreads, [&] { ae_fwd_combine(p); });
    }
  }
  write(dir + "/o.bin", o, o_numel * 2);
  write(dir + "/lse.bin", lse, lse_numel * 4);
  write(dir + "/o_part.bin", o_part.data(), o_part.size() * 4);
  write(dir + "/lse_part.bin", lse_part.data(), lse_part.size() * 4);
  return 0;
}
