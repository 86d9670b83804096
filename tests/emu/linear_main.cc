// Runs linear attention's generated kernels on the CPU as the planner launches them: the
// chunked forward's state pass and output pass (sm80/linear_fwd.h), or the decode step
// (common/linear_step.h). DIR/args.txt: shapes, the scale, per_channel, and per step its grid,
// threads and shared memory ("grid_<step>", "threads_<step>", "smem_<step>"); DIR/q.bin, k.bin,
// v.bin (16-bit, contiguous [B, H, T, D]), a.bin (fp32), state.bin (fp32 [B, H, Dk, Dv]: the
// step's state in, or the forward's initial state where "state0" is given). Writes o.bin and
// state.bin (the state after; NaN where a forward was not asked for it).
#include <cstring>
#include <limits>

#include "nvidia_args.h"

extern "C" __attribute__((weak)) void ae_linear_state(const ae::LinearParams lp);
extern "C" __attribute__((weak)) void ae_linear_out(const ae::LinearParams lp);
extern "C" __attribute__((weak)) void ae_linear_step(const ae::LinearParams lp);

using emu::read;
using emu::write;

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string dir = argv[1];
  const emu::Args i(dir + "/args.txt");
  std::vector<char> q = read(dir + "/q.bin"), k = read(dir + "/k.bin"), v = read(dir + "/v.bin");
  std::vector<char> a = read(dir + "/a.bin");
  ae::LinearParams p{};
  p.batch = i("B"), p.heads = i("H"), p.t_len = i("T"), p.d_k = i("Dk"), p.d_v = i("Dv");
  p.per_channel = i("per_channel"), p.n_chunks = i("n_chunks");
  p.scale = static_cast<float>(i.real("scale"));
  const long long T = p.t_len;
  for (long long* s : {p.q_stride, p.k_stride}) s[0] = p.heads * T * p.d_k, s[1] = T * p.d_k, s[2] = p.d_k;
  for (long long* s : {p.v_stride, p.o_stride}) s[0] = p.heads * T * p.d_v, s[1] = T * p.d_v, s[2] = p.d_v;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const size_t states = static_cast<size_t>(p.batch) * p.heads * p.d_k * p.d_v;
  std::vector<unsigned short> o(static_cast<size_t>(p.batch) * p.heads * T * p.d_v, 0xffff);
  std::vector<float> state(states, nan), state0;
  std::vector<unsigned short> chunks(states * p.n_chunks, 0xffff);  // (NaN: unwritten shows)
  const bool stepping = i.has("grid_linear_step");
  if (stepping || i.has("state0")) {
    std::vector<char> in = read(dir + "/state.bin");
    (stepping ? state : state0).assign(reinterpret_cast<float*>(in.data()),
                                       reinterpret_cast<float*>(in.data() + in.size()));
  }
  p.q = q.data(), p.k = k.data(), p.v = v.data(), p.o = o.data();
  p.a = reinterpret_cast<const float*>(a.data());
  p.state = stepping || i.has("want_state") ? state.data() : nullptr;
  p.state0 = state0.empty() ? nullptr : state0.data();
  p.chunk_states = chunks.data();
  emu::smem = AE_EMU_SMEM;
  for (const char* name : {"linear_state", "linear_out", "linear_step"}) {
    const std::string g = std::string("grid_") + name;
    if (!i.has(g)) continue;
    void (*entry)(const ae::LinearParams) = std::strcmp(name, "linear_state") == 0 ? ae_linear_state
                                            : std::strcmp(name, "linear_out") == 0 ? ae_linear_out
                                                                                   : ae_linear_step;
    if (!entry) return 4;
    emu::smem_bytes = static_cast<unsigned>(i(std::string("smem_") + name));
    if (emu::smem_bytes > sizeof(AE_EMU_SMEM)) return 3;
    gridDim = {static_cast<unsigned>(i(g, 0)), static_cast<unsigned>(i(g, 1)), static_cast<unsigned>(i(g, 2))};
    for (unsigned z = 0; z < gridDim.z; ++z)
      for (unsigned y = 0; y < gridDim.y; ++y)
        for (unsigned x = 0; x < gridDim.x; ++x) {
          blockIdx = {x, y, z};
          std::memset(AE_EMU_SMEM, 0xff, sizeof(AE_EMU_SMEM));  // (not zeros)
          emu::run_block(static_cast<int>(i(std::string("threads_") + name)), [&] { entry(p); });
        }
  }
  write(dir + "/o.bin", o.data(), o.size() * 2);
  write(dir + "/state.bin", state.data(), state.size() * 4);
  return 0;
}
