// Runs a generated NVIDIA backward (sm90: TMA + wgmma; sm80: mma.sync; compiled with it on the
// host over tests/emu/cuda_host.h and tests/emu/shims) as the planner plans it: for a masked
// variant the block-state pass (its generated source linked in: ae_block_state), the prep row
// pass (common/bwd_rows.h: delta, the log2 LSE, dq_accum zeroed), the main kernel, the dQ row
// pass. The test writes DIR/args.txt ("key value" lines, as nvidia_fwd_main.cc's) and the
// tensors (q, k, v, the forward's o and lse, dO; packed sequences' cu_q, cu_k, kv_lens); this
// writes DIR/dq.bin, dk.bin and dv.bin. AE_EMU_TMA_MAPS: 4 (Q, K, V, dO: sm90) or 0 (sm80);
// AE_EMU_SMEM_NS / AE_EMU_SMEM_NAME: the main kernel's shared-memory array.
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "common/bwd_rows.h"
#include "common/params.h"
#include "common/shapes.h"
#include "nvidia_args.h"
#include "row_pass.h"

#if AE_EMU_TMA_MAPS == 4
extern "C" void ae_bwd(const ae::AttnParams p, const ae::VariantArgs va, const ae::TmaDesc tq,
                       const ae::TmaDesc tk, const ae::TmaDesc tv, const ae::TmaDesc tdo);
#else
extern "C" void ae_bwd(const ae::AttnParams p, const ae::VariantArgs va);
#endif

using emu::read;
using emu::row_pass;
using emu::write;

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string dir = argv[1];
  const emu::Args i(dir + "/args.txt");
  auto has = [&](const std::string& k) { return i.has(k); };

  std::vector<char> q = read(dir + "/q.bin"), k = read(dir + "/k.bin"), v = read(dir + "/v.bin");
  std::vector<char> o = read(dir + "/o.bin"), dout = read(dir + "/do.bin"), lse = read(dir + "/lse.bin");
  std::vector<std::vector<char>> bufs;
  ae::VariantArgs va{};
  emu::read_buffers(i, dir, bufs, va);
  const long long B = i("B"), Hq = i("Hq"), Hkv = i("Hkv"), Sq = i("Sq"), Skv = i("Skv");
  const long long Dqk = i("Dqk"), Dv = i("Dv"), block_m = i("block_m"), block_n = i("block_n");
  const long long n_q_blocks = (Sq + block_m - 1) / block_m, n_kv_blocks = (Skv + block_n - 1) / block_n;
  std::vector<unsigned short> dq(i("q_numel")), dk(i("k_numel")), dv(i("v_numel"));
  std::vector<float> delta(B * Hq * Sq), lse2(B * Hq * Sq), dq_accum(B * Hq * n_q_blocks * block_m * Dqk);
  std::vector<char> kv_lens, cu_q, cu_k;
  if (has("q_total")) {
    cu_q = read(dir + "/cu_q.bin"), cu_k = read(dir + "/cu_k.bin"), kv_lens = read(dir + "/kv_lens.bin");
  }
  auto set3 = [&](long long (&s)[3], const std::string& key) {
    for (int d = 0; d < 3; ++d) s[d] = i(key, d);
  };

  emu::smem = AE_EMU_SMEM;
  emu::smem_bytes = static_cast<unsigned>(i("smem"));
  ae::AttnParams p{};
  p.q = q.data(), p.k = k.data(), p.v = v.data(), p.dout = dout.data();
  p.lse2 = lse2.data(), p.delta = delta.data();
  p.dq_accum = dq_accum.data(), p.dk = dk.data(), p.dv = dv.data();
  set3(p.q_stride, "q_stride"), set3(p.k_stride, "k_stride"), set3(p.v_stride, "v_stride");
  set3(p.do_stride, "o_stride"), set3(p.dk_stride, "k_stride"), set3(p.dv_stride, "v_stride");
  p.batch = B, p.q_heads = Hq, p.kv_heads = Hkv, p.group = Hq / Hkv, p.q_len = Sq, p.kv_len = Skv;
  p.scale = static_cast<float>(i.real("scale"));
  p.scale_log2 = static_cast<float>(i.real("scale") * 1.4426950408889634);
  p.n_q_blocks = n_q_blocks, p.n_kv_blocks = n_kv_blocks;
  p.head_group = 1, p.d_qk = Dqk, p.d_v = Dv, p.kv_splits = 1;
  if (has("q_total")) {
    p.cu_q = reinterpret_cast<const int*>(cu_q.data());
    p.cu_k = reinterpret_cast<const int*>(cu_k.data());
    p.q_total = i("q_total");
    p.kv_lens = kv_lens.data(), p.kv_lens_stride = 1, p.kv_lens_int32 = i("kv_lens") == 4;
  }
  // The block-state pass: a table per batch (packed sequences) and per head where asked.
  std::vector<unsigned char> states;
  if (i("masked") && !emu::run_block_states(p, va, static_cast<int>(block_m), static_cast<int>(block_n),
                                            i("state_batches"), i("state_heads"), states,
                                            has("rest_b") ? static_cast<int>(i("rest_b")) : -1,
                                            has("rest_h") ? static_cast<int>(i("rest_h")) : -1, 0,
                                            has("half_n") ? static_cast<int>(i("half_n")) : 0))
    return 3;

  ae::BwdRowParams rp{};
  rp.dout = dout.data(), rp.o = o.data(), rp.lse = reinterpret_cast<const float*>(lse.data());
  rp.delta = delta.data(), rp.lse2 = lse2.data(), rp.dq_accum = dq_accum.data(), rp.dq = dq.data();
  set3(rp.do_stride, "o_stride"), set3(rp.o_stride, "o_stride"), set3(rp.dq_stride, "q_stride");
  rp.batch = B, rp.heads = Hq, rp.q_len = Sq, rp.acc_rows = n_q_blocks * block_m;
  rp.d_qk = Dqk, rp.d_v = Dv, rp.acc_cols = Dqk, rp.scale = p.scale;
  rp.acc_tiled = i("acc_tiled");
  rp.order_rows = block_m;
  if (has("q_total")) rp.cu_q = p.cu_q, rp.q_total = p.q_total;
  rp.lanes = ae::row_pass_lanes(Dv);
  row_pass(rp, [&] { ae::bwd_prep<true>(rp); });

#if AE_EMU_TMA_MAPS == 4
  auto map = [&](const char* data, const std::string& key) { return emu::tma_map(i, data, key); };
  const ae::TmaDesc tq = map(q.data(), "tq"), tk = map(k.data(), "tk"), tv = map(v.data(), "tv"),
                    tdo = map(dout.data(), "to");
#endif
  gridDim = {static_cast<unsigned>(n_kv_blocks), static_cast<unsigned>(Hkv), static_cast<unsigned>(B)};
  for (unsigned z = 0; z < gridDim.z; ++z)
    for (unsigned y = 0; y < gridDim.y; ++y)
      for (unsigned x = 0; x < gridDim.x; ++x) {
        blockIdx = {x, y, z};
        std::memset(AE_EMU_SMEM, 0xff, sizeof(AE_EMU_SMEM));  // (not zeros)
#if AE_EMU_TMA_MAPS == 4
        emu::run_block(static_cast<int>(i("threads")), [&] { ae_bwd(p, va, tq, tk, tv, tdo); });
#else
        emu::run_block(static_cast<int>(i("threads")), [&] { ae_bwd(p, va); });
#endif
      }

  rp.lanes = ae::row_pass_lanes(Dqk);
  row_pass(rp, [&] { ae::bwd_dq<true>(rp); });
  write(dir + "/dq.bin", dq.data(), dq.size() * 2);
  write(dir + "/dk.bin", dk.data(), dk.size() * 2);
  write(dir + "/dv.bin", dv.data(), dv.size() * 2);
  return 0;
}
