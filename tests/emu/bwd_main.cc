// Runs a generated gfx90a backward (compiled with it, on the host, over tests/emu/hip_host.h)
// as the planner plans it (blocks in launch order: the deterministic mode's waits for earlier
// blocks are met): the prep row pass (common/bwd_rows.h: delta, the log2 LSE, dq_accum
// zeroed), a custom normalization's row terms (the generated bwd_rows_custom, linked in for
// those variants), the main kernel, the dQ row pass. The test writes DIR/args.txt, the tensors (q, k,
// v, the forward's o and lse, dO) and, for a masked variant, the block-state table (or links
// the planned block-state pass, ae_block_state, which builds it); this writes DIR/dq.bin,
// dk.bin, dv.bin and grad<i>.bin for captured tensors that get gradients. Keyed lines after
// the positional values (emu::keyed), for packed sequences (VarlenLayout):
//   q_stride / k_stride / v_stride / o_stride s0 s1 s2   strides (elements): q and dq; k and
//                    dk; v and dv; o and do
//   q_numel / k_numel / v_numel n                          dq's, dk's and dv's sizes
//   varlen q_total kv_lens_bytes   cu_q.bin, cu_k.bin (int32), kv_lens.bin
// q, k, v, o, dO and the lengths end where an inaccessible page begins (emu::guarded).
#include <cstdio>
#include <fstream>
#include <string>

#include "common/bwd_rows.h"
#include "common/params.h"
#include "emu_io.h"
#include "row_pass.h"
#include "common/shapes.h"

extern "C" void ae_bwd(const ae::AttnParams p, const ae::VariantArgs va);
extern "C" __attribute__((weak)) void ae_bwd_rows_custom(const ae::BwdRowParams rp,
                                                         const ae::VariantArgs va);
extern "C" __attribute__((weak)) void ae_block_state(const ae::AttnParams p, const ae::VariantArgs va,
                                                     const ae::BlockStateParams bs);

namespace {

using emu::read;
using emu::read_guarded;
using emu::row_pass;
using emu::write;

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string dir = argv[1];
  std::ifstream args(dir + "/args.txt");
  long long B, Hq, Hkv, Sq, Skv, Dqk, Dv, block_m, block_n, threads, bf16, masked, stats, custom,
      deterministic, nbuf;
  double scale;
  args >> B >> Hq >> Hkv >> Sq >> Skv >> Dqk >> Dv >> block_m >> block_n >> threads >> bf16 >>
      masked >> stats >> custom >> deterministic >> scale >> nbuf;
  const char* q = read_guarded(dir + "/q.bin");
  const char* k = read_guarded(dir + "/k.bin");
  const char* v = read_guarded(dir + "/v.bin");
  const char* o = read_guarded(dir + "/o.bin");
  const char* dout = read_guarded(dir + "/do.bin");
  const char* lse = read_guarded(dir + "/lse.bin");
  std::vector<std::vector<char>> bufs;
  std::vector<std::vector<float>> grads(nbuf);
  ae::VariantArgs va{};
  bufs.reserve(nbuf);
  for (int i = 0; i < nbuf; ++i) {  // rank, the sizes, whether it gets a gradient; contiguous
    int rank, wants_grad;
    args >> rank;
    bufs.push_back(read(dir + "/buf" + std::to_string(i) + ".bin"));
    va.buf[i].data = bufs.back().data();
    long long numel = 1;
    for (int d = 0; d < rank; ++d) args >> va.buf[i].size[d], numel *= va.buf[i].size[d];
    long long stride = 1;
    for (int d = rank - 1; d >= 0; --d)
      va.buf[i].stride[d] = va.buf[i].gstride[d] = stride, stride *= va.buf[i].size[d];
    args >> wants_grad;
    if (wants_grad) {
      grads[i].assign(numel, 0.f);
      va.buf[i].grad = grads[i].data();
    }
  }
  auto ext = emu::keyed(args);
  auto get = [&](const char* key, long long dflt) { return ext.count(key) ? ext[key][0] : dflt; };
  const long long n_q_blocks = (Sq + block_m - 1) / block_m, n_kv_blocks = (Skv + block_n - 1) / block_n;
  std::vector<unsigned short> dq(get("q_numel", B * Hq * Sq * Dqk)),
      dk(get("k_numel", B * Hkv * Skv * Dqk)), dv(get("v_numel", B * Hkv * Skv * Dv));
  std::vector<float> delta(B * Hq * Sq), lse2(B * Hq * Sq), dq_accum(B * Hq * n_q_blocks * block_m * Dqk);
  std::vector<int> dq_order(B * Hq * n_q_blocks, -1);  // the prep pass zeroes it
  std::vector<char> states;
  if (masked && !ae_block_state) states = read(dir + "/states.bin");  // [B][Hq][n_q_blocks][n_kv_blocks]
  auto set3 = [&](long long (&s)[3], const char* key, long long H, long long S, long long D) {
    s[0] = H * S * D, s[1] = S * D, s[2] = D;
    if (ext.count(key))
      for (int i = 0; i < 3; ++i) s[i] = ext[key].at(i);
  };
  const int* cu_q = nullptr;
  const int* cu_k = nullptr;
  const char* kv_lens = nullptr;
  if (ext.count("varlen")) {
    cu_q = reinterpret_cast<const int*>(read_guarded(dir + "/cu_q.bin"));
    cu_k = reinterpret_cast<const int*>(read_guarded(dir + "/cu_k.bin"));
    kv_lens = read_guarded(dir + "/kv_lens.bin");
  }

  ae::BwdRowParams rp{};
  rp.dout = dout, rp.o = o, rp.lse = reinterpret_cast<const float*>(lse);
  rp.delta = stats ? delta.data() : nullptr, rp.lse2 = lse2.data(), rp.dq_accum = dq_accum.data();
  rp.dq = dq.data();
  set3(rp.do_stride, "o_stride", Hq, Sq, Dv);
  set3(rp.o_stride, "o_stride", Hq, Sq, Dv);
  set3(rp.dq_stride, "q_stride", Hq, Sq, Dqk);
  if (cu_q) rp.cu_q = cu_q, rp.q_total = static_cast<int>(ext["varlen"][0]);
  rp.batch = B, rp.heads = Hq, rp.q_len = Sq, rp.acc_rows = n_q_blocks * block_m;
  rp.d_qk = Dqk, rp.d_v = Dv, rp.acc_cols = Dqk, rp.scale = scale;
  rp.lanes = ae::row_pass_lanes(Dv);
  rp.order_rows = block_m;
  if (deterministic) rp.dq_order = dq_order.data();
  row_pass(rp, [&] { bf16 ? ae::bwd_prep<true>(rp) : ae::bwd_prep<false>(rp); });
  if (custom) {  // a thread per row, 128 per block (the planner's custom_rows_pass)
    if (!ae_bwd_rows_custom) return 3;
    const long long rows = B * Hq * Sq;
    gridDim = {static_cast<unsigned>((rows + 127) / 128), 1, 1};
    for (unsigned x = 0; x < gridDim.x; ++x) {
      blockIdx = {x, 0, 0};
      emu::run_block(128, [&] { ae_bwd_rows_custom(rp, va); });
    }
  }

  ae::AttnParams p{};
  p.q = q, p.k = k, p.v = v, p.dout = dout;
  p.lse2 = stats ? lse2.data() : nullptr, p.delta = stats ? delta.data() : nullptr;
  p.dq_accum = dq_accum.data(), p.dk = dk.data(), p.dv = dv.data();
  p.dq_order = deterministic ? dq_order.data() : nullptr;
  set3(p.q_stride, "q_stride", Hq, Sq, Dqk);
  set3(p.k_stride, "k_stride", Hkv, Skv, Dqk);
  set3(p.v_stride, "v_stride", Hkv, Skv, Dv);
  set3(p.do_stride, "o_stride", Hq, Sq, Dv);
  set3(p.dk_stride, "k_stride", Hkv, Skv, Dqk);
  set3(p.dv_stride, "v_stride", Hkv, Skv, Dv);
  p.batch = B, p.q_heads = Hq, p.kv_heads = Hkv, p.group = Hq / Hkv, p.q_len = Sq, p.kv_len = Skv;
  p.scale = scale, p.scale_log2 = scale * 1.4426950408889634;
  p.n_q_blocks = n_q_blocks, p.n_kv_blocks = n_kv_blocks;
  p.head_group = 1, p.d_qk = Dqk, p.d_v = Dv, p.kv_splits = 1;
  if (cu_q) {
    p.cu_q = cu_q, p.cu_k = cu_k, p.q_total = static_cast<int>(ext["varlen"][0]);
    p.kv_lens = kv_lens, p.kv_lens_stride = 1, p.kv_lens_int32 = ext["varlen"].at(1) == 4;
  }
  std::vector<unsigned char> built;
  if (masked && ae_block_state) {  // the planned pass: a table per batch and head
    const long long tiles = n_q_blocks * n_kv_blocks;
    built.assign(B * Hq * tiles, 0xff);
    const ae::BlockStateParams bs{built.data(), static_cast<int>(block_m), static_cast<int>(block_n),
                                  1, 1, nullptr, 0, 0, 0};
    gridDim = {static_cast<unsigned>(n_kv_blocks), static_cast<unsigned>(n_q_blocks),
               static_cast<unsigned>(B * Hq)};
    for (unsigned z = 0; z < gridDim.z; ++z)
      for (unsigned y = 0; y < gridDim.y; ++y)
        for (unsigned x = 0; x < gridDim.x; ++x) {
          blockIdx = {x, y, z};
          emu::run_block(ae::kBlockStateThreads, [&] { ae_block_state(p, va, bs); });
        }
    p.block_state = built.data();
  } else if (masked) {
    p.block_state = reinterpret_cast<const unsigned char*>(states.data());
  }
  if (masked) p.state_stride_h = n_q_blocks * n_kv_blocks, p.state_stride_b = Hq * p.state_stride_h;
  gridDim = {static_cast<unsigned>(n_kv_blocks), static_cast<unsigned>(Hkv), static_cast<unsigned>(B)};
  for (unsigned z = 0; z < gridDim.z; ++z)
    for (unsigned y = 0; y < gridDim.y; ++y)
      for (unsigned x = 0; x < gridDim.x; ++x) {
        blockIdx = {x, y, z};
        emu::run_block(static_cast<int>(threads), [&] { ae_bwd(p, va); });
      }

  rp.lanes = ae::row_pass_lanes(Dqk);
  row_pass(rp, [&] { bf16 ? ae::bwd_dq<true>(rp) : ae::bwd_dq<false>(rp); });
  write(dir + "/dq.bin", dq.data(), dq.size() * 2);
  write(dir + "/dk.bin", dk.data(), dk.size() * 2);
  write(dir + "/dv.bin", dv.data(), dv.size() * 2);
  for (int i = 0; i < nbuf; ++i)
    if (!grads[i].empty())
      write(dir + "/grad" + std::to_string(i) + ".bin", grads[i].data(), grads[i].size() * 4);
  return 0;
}
