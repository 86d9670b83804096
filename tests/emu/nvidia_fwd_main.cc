// Runs a generated NVIDIA forward (sm90: the TMA + wgmma forward or the MLA decode template;
// sm80: the mma.sync forward or the decode template; compiled with it on the host over
// tests/emu/cuda_host.h and tests/emu/shims) on inputs from files, launched block by block as
// the runner would: the test writes DIR/args.txt ("key
// value" lines: shapes, strides, tensor-map dims, the layout's fields) and the tensors; this
// writes DIR/o.bin and DIR/lse.bin (and the split-KV partials; the gate-training forward's block
// maxima). Masked variants get their
// block-state table from the generated block-state pass where it is linked in (ae_block_state:
// a table per batch and head, so that any mask's is right), else one of partial blocks (every
// block walked, the mask applied to each score).
// AE_EMU_TMA_MAPS: the entry's tensor maps (3: Q, K, V; 2: Q, K, as the MLA decode's; 0: none,
// the sm80 family's). AE_EMU_SMEM_NS / AE_EMU_SMEM_NAME: the kernel's extern __shared__ array
// (ae::sm90::smem_raw, ae::sm80::smem, ae::sm80::smem_raw).
// Split-KV: where the generated combine step (ae_fwd_combine) is linked in, it merges the
// partials into o.bin and lse.bin as on a GPU; the partials start as NaN (a GPU's workspace
// is not cleared), so a range the forward leaves unwritten shows.
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <string>

#include "common/params.h"
#include "common/shapes.h"
#include "nvidia_args.h"

#ifndef AE_EMU_TMA_MAPS
#define AE_EMU_TMA_MAPS 3
#endif

#if AE_EMU_TMA_MAPS == 3
extern "C" void ae_fwd(const ae::AttnParams p, const ae::VariantArgs va, const ae::TmaDesc tq,
                       const ae::TmaDesc tk, const ae::TmaDesc tv);
#elif AE_EMU_TMA_MAPS == 2
extern "C" void ae_fwd(const ae::AttnParams p, const ae::VariantArgs va, const ae::TmaDesc tq,
                       const ae::TmaDesc tk);
#else
extern "C" void ae_fwd(const ae::AttnParams p, const ae::VariantArgs va);
#endif
extern "C" __attribute__((weak)) void ae_fwd_combine(const ae::AttnParams p);
extern "C" __attribute__((weak)) void ae_pool_map(const ae::AttnParams p);

using emu::read;
using emu::write;

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string dir = argv[1];
  const emu::Args i(dir + "/args.txt");
  auto has = [&](const std::string& k) { return i.has(k); };

  std::vector<char> q = read(dir + "/q.bin"), k = read(dir + "/k.bin");
  std::vector<char> v = has("v_in_k") ? std::vector<char>() : read(dir + "/v.bin");
  const char* v_data = has("v_in_k") ? k.data() : v.data();
  std::vector<std::vector<char>> bufs;
  ae::VariantArgs va{};
  emu::read_buffers(i, dir, bufs, va);

  ae::AttnParams p{};
  p.batch = i("B"), p.q_heads = i("Hq"), p.kv_heads = i("Hkv"), p.group = p.q_heads / p.kv_heads;
  p.q_len = i("Sq"), p.kv_len = i("Skv"), p.d_qk = i("Dqk"), p.d_v = i("Dv");
  p.scale = static_cast<float>(i.real("scale"));
  p.scale_log2 = static_cast<float>(i.real("scale") * 1.4426950408889634);
  const int block_m = i("block_m"), block_n = i("block_n"), splits = i("splits");
  p.n_q_blocks = (p.q_len + block_m - 1) / block_m;
  p.n_kv_blocks = (p.kv_len + block_n - 1) / block_n;
  p.head_group = 1;
  std::vector<unsigned short> o(i("o_numel"));
  std::vector<float> lse(i("lse_numel"));
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> o_part(splits * p.batch * p.q_heads * p.q_len * p.d_v, nan),
      lse_part(splits * p.batch * p.q_heads * p.q_len, nan);
  p.q = q.data(), p.k = k.data(), p.v = v_data, p.o = o.data(), p.lse = lse.data();
  for (int d = 0; d < 3; ++d) {
    p.q_stride[d] = i("q_stride", d), p.k_stride[d] = i("k_stride", d);
    p.v_stride[d] = i("v_stride", d), p.o_stride[d] = i("o_stride", d);
  }
  std::vector<unsigned char> states(p.n_q_blocks * p.n_kv_blocks, 1);  // all partial
  if (i("masked")) p.block_state = states.data();
  p.kv_splits = splits;
  p.row_stats = 1;
  if (splits > 1) {
    p.kv_split_blocks = (p.n_kv_blocks + splits - 1) / splits;
    p.o_part = o_part.data(), p.lse_part = lse_part.data();
  }
  // The gate-training forward (args "pool": keys per block): the block maxima, filled with
  // -inf as the host does, written to block_max.bin.
  std::vector<float> block_max, pooled;
  if (has("pool")) {
    p.pool_block = i("pool");
    p.n_pool_blocks = (p.kv_len + p.pool_block - 1) / p.pool_block;
    // (and a guard row past the end, which must stay as it is: 1e30)
    const size_t q_blocks = (p.q_len + p.pool_block - 1) / p.pool_block;
    block_max.assign(static_cast<size_t>(p.batch) * p.q_heads * q_blocks * p.n_pool_blocks *
                         p.pool_block,  // (common/block_max_layout.h)
                     -std::numeric_limits<float>::infinity());
    block_max.resize(block_max.size() + p.q_len, 1e30f);
    pooled.assign(static_cast<size_t>(p.batch) * p.q_heads * p.n_pool_blocks *
                      ((p.q_len + p.pool_block - 1) / p.pool_block), nan);
    p.block_max = block_max.data();
    p.pooled = pooled.data();
  }
  std::vector<char> kv_lens, table, cu_q, cu_k;
  if (has("kv_lens")) {  // one per batch, of kv_lens bytes each (4: int32, 8: int64)
    kv_lens = read(dir + "/kv_lens.bin");
    p.kv_lens = kv_lens.data(), p.kv_lens_stride = 1, p.kv_lens_int32 = i("kv_lens") == 4;
  }
  if (has("max_pages")) {  // int32 [B, max_pages]
    table = read(dir + "/table.bin");
    p.page_table = reinterpret_cast<const int*>(table.data());
    p.max_pages = i("max_pages"), p.page_table_stride = p.max_pages;
    p.num_pages = i("num_pages");
  }
  if (has("q_total")) {  // int32 [B + 1] each
    cu_q = read(dir + "/cu_q.bin"), cu_k = read(dir + "/cu_k.bin");
    p.cu_q = reinterpret_cast<const int*>(cu_q.data());
    p.cu_k = reinterpret_cast<const int*>(cu_k.data());
    p.q_total = i("q_total");
  }
  // Tensor maps: dims (innermost first) and byte strides of dims 1..3 as the runner's tma_map
  // gives them, boxes of 64 columns by box rows.
  auto map = [&](const char* data, const std::string& key) { return emu::tma_map(i, data, key); };
#if AE_EMU_TMA_MAPS >= 2
  const ae::TmaDesc tq = map(q.data(), "tq"), tk = map(k.data(), "tk");
#endif
#if AE_EMU_TMA_MAPS == 3
  const ae::TmaDesc tv = map(v_data, "tv");
#endif
  emu::smem = AE_EMU_SMEM;
  emu::smem_bytes = static_cast<unsigned>(i("smem"));
  if (emu::smem_bytes > sizeof(AE_EMU_SMEM)) return 3;
  if (i("masked"))  // the block-state pass, a table per (batch, head): right for any mask
    emu::run_block_states(p, va, block_m, block_n, p.batch, p.q_heads, states,
                          has("rest_b") ? static_cast<int>(i("rest_b")) : -1,
                          has("rest_h") ? static_cast<int>(i("rest_h")) : -1,
                          has("half_m") ? static_cast<int>(i("half_m")) : 0);
  gridDim = {static_cast<unsigned>(p.n_q_blocks), static_cast<unsigned>(p.q_heads),
             static_cast<unsigned>(p.batch * splits)};
  for (unsigned z = 0; z < gridDim.z; ++z)
    for (unsigned y = 0; y < gridDim.y; ++y)
      for (unsigned x = 0; x < gridDim.x; ++x) {
        blockIdx = {x, y, z};
        std::memset(AE_EMU_SMEM, 0xff, sizeof(AE_EMU_SMEM));  // (not zeros)
#if AE_EMU_TMA_MAPS == 3
        emu::run_block(static_cast<int>(i("threads")), [&] { ae_fwd(p, va, tq, tk, tv); });
#elif AE_EMU_TMA_MAPS == 2
        emu::run_block(static_cast<int>(i("threads")), [&] { ae_fwd(p, va, tq, tk); });
#else
        emu::run_block(static_cast<int>(i("threads")), [&] { ae_fwd(p, va); });
#endif
      }
  if (splits > 1 && ae_fwd_combine) {  // the combine step as the planner launches it
    constexpr int threads = ae::kCombineThreads, per_cta = threads / 32;
    const long long rows = static_cast<long long>(p.batch) * p.q_heads * p.q_len;
    gridDim = {static_cast<unsigned>((rows + per_cta - 1) / per_cta), 1, 1};
    for (unsigned x = 0; x < gridDim.x; ++x) {
      blockIdx = {x, 0, 0};
      emu::run_block(threads, [&] { ae_fwd_combine(p); });
    }
  }
  if (has("pool"))
    for (int r = 0; r < p.q_len; ++r)
      if (block_max[block_max.size() - p.q_len + r] != 1e30f) return 5;  // written past the end
  if (has("pool") && ae_pool_map) {  // the map from the block maxima, as the planner launches it
    constexpr int per_cta = ae::kPoolThreads / 32;
    const long long warps = static_cast<long long>(p.batch) * p.q_heads *
                            ((p.q_len + p.pool_block - 1) / p.pool_block);
    gridDim = {static_cast<unsigned>((warps + per_cta - 1) / per_cta), 1, 1};
    for (unsigned x = 0; x < gridDim.x; ++x) {
      blockIdx = {x, 0, 0};
      emu::run_block(ae::kPoolThreads, [&] { ae_pool_map(p); });
    }
    write(dir + "/pooled.bin", pooled.data(), pooled.size() * 4);
  }
  write(dir + "/o.bin", o.data(), o.size() * 2);
  write(dir + "/lse.bin", lse.data(), lse.size() * 4);
  write(dir + "/o_part.bin", o_part.data(), o_part.size() * 4);
  write(dir + "/lse_part.bin", lse_part.data(), lse_part.size() * 4);
  if (has("pool")) write(dir + "/block_max.bin", block_max.data(), (block_max.size() - p.q_len) * 4);
  return 0;
}
