// Runs common/block_state.h's mask pass on packed sequences (VarlenLayout) with a causal mask
// that counts its evaluations, and prints the table and the count: the test checks the table
// against the tiles' classification and that only scores inside a sequence were evaluated.
//   block_state_main BLOCK_M BLOCK_N HALF_M LQ0 LK0 [LQ1 LK1 ...]   (HALF_M 0: no halves)
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "common/block_state.h"

namespace {

std::atomic<long long> calls{0};

struct CountingCausal {  // kv_idx <= q_idx + (kv_len - q_len), per sequence
  const ae::AttnParams* p;
  bool mask(int b, int, int q, int k) const {
    ++calls;
    return k <= q + (ae::VarlenLayout::kv_len(*p, b) - ae::VarlenLayout::q_len(*p, b));
  }
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6 || argc % 2 == 1) return 2;
  // half: > 0 half_m (rows), < 0 half_n = -half (keys)
  const int bm = std::atoi(argv[1]), bn = std::atoi(argv[2]), half = std::atoi(argv[3]);
  const int half_m = half > 0 ? half : 0, half_n = half < 0 ? -half : 0;
  const int n = (argc - 4) / 2;
  std::vector<int> cu_q{0}, cu_k{0}, lk;
  int max_q = 0, max_k = 0;
  for (int b = 0; b < n; ++b) {
    const int q = std::atoi(argv[4 + 2 * b]), k = std::atoi(argv[5 + 2 * b]);
    cu_q.push_back(cu_q.back() + q), cu_k.push_back(cu_k.back() + k), lk.push_back(k);
    max_q = q > max_q ? q : max_q, max_k = k > max_k ? k : max_k;
  }
  ae::AttnParams p{};
  p.batch = n, p.q_heads = 1, p.q_len = max_q, p.kv_len = max_k;
  p.cu_q = cu_q.data(), p.cu_k = cu_k.data();
  p.kv_lens = lk.data(), p.kv_lens_stride = 1, p.kv_lens_int32 = 1;
  p.n_q_blocks = (max_q + bm - 1) / bm, p.n_kv_blocks = (max_k + bn - 1) / bn;
  std::vector<unsigned char> table(static_cast<size_t>(n) * p.n_q_blocks * p.n_kv_blocks, 0xff);
  const ae::BlockStateParams bs{table.data(), bm, bn, 1, 0, nullptr, 0, 0, half_m, half_n};
  const CountingCausal var{&p};
  gridDim = {static_cast<unsigned>(p.n_kv_blocks), static_cast<unsigned>(p.n_q_blocks),
             static_cast<unsigned>(n)};
  for (unsigned z = 0; z < gridDim.z; ++z)
    for (unsigned y = 0; y < gridDim.y; ++y)
      for (unsigned x = 0; x < gridDim.x; ++x) {
        blockIdx = {x, y, z};
        emu::run_block(ae::kBlockStateThreads,
                       [&] { ae::block_state<ae::VarlenLayout>(p, var, bs); });
      }
  std::printf("calls %lld\n", calls.load());
  for (unsigned char c : table) std::printf("%d ", c);
  std::printf("\n");
  return 0;
}
