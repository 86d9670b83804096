// Runs linear attention's generated kernels on the CPU as the planner launches them: the
// chunked forward's state pass and output pass (sm80/linear_fwd.h), or the decode step
// (common/linear_step.h). DIR/args.txt: shapes, the scale, per_channel, and per step its grid,
// threads and shared memory ("grid_<step>", "threads_<step>", "smem_<step>"); DIR/q.bin, k.bin,
// v.bin (16-bit, contiguous [B, H, T, D]), a.bin (fp32), state.bin (fp32 [B, H, Dk, Dv]: the
// step's state in, or the forward's initial state where "state0" is given). Writes o.bin and
// state.bin (the state after; NaN where a forward was not asked for it). The backward
// ("backward" given: the state pass, linear_dstate, linear_grads): dout.bin (16-bit like v),
// dstate.bin (fp32, where "dstate" is given) in; dq.bin, dk.bin, dv.bin (16-bit), da.bin (per
// key channel with per_channel) and dstate0.bin (fp32) out. Packed sequences: "n_seqs", cu.bin
// and map.bin (LinearParams).
#include <cstring>
#include <limits>

#include "nvidia_args.h"

extern "C" __attribute__((weak)) void ae_linear_state(const ae::LinearParams lp);
extern "C" __attribute__((weak)) void ae_linear_out(const ae::LinearParams lp);
extern "C" __attribute__((weak)) void ae_linear_step(const ae::LinearParams lp);
extern "C" __attribute__((weak)) void ae_linear_dstate(const ae::LinearParams lp);
extern "C" __attribute__((weak)) void ae_linear_grads(const ae::LinearParams lp);

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
  // Packed sequences ("n_seqs"): cu.bin (int32, n_seqs + 1) and map.bin (the chunk map, int32).
  std::vector<char> cu, map;
  if (i.has("n_seqs")) {
    cu = read(dir + "/cu.bin"), map = read(dir + "/map.bin");
    p.n_seqs = i("n_seqs");
    p.cu_seqlens = reinterpret_cast<const int*>(cu.data());
    p.chunk_map = reinterpret_cast<const int*>(map.data());
  }
  p.scale = static_cast<float>(i.real("scale"));
  const long long T = p.t_len;
  for (long long* s : {p.q_stride, p.k_stride}) s[0] = p.heads * T * p.d_k, s[1] = T * p.d_k, s[2] = p.d_k;
  for (long long* s : {p.v_stride, p.o_stride}) s[0] = p.heads * T * p.d_v, s[1] = T * p.d_v, s[2] = p.d_v;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const size_t states = static_cast<size_t>(p.n_seqs > 0 ? p.n_seqs : p.batch) * p.heads * p.d_k * p.d_v;
  std::vector<unsigned short> o(static_cast<size_t>(p.batch) * p.heads * T * p.d_v, 0xffff);
  std::vector<float> state(states, nan), state0;
  // (NaN: what is left unwritten shows)
  std::vector<unsigned short> chunks(static_cast<size_t>(p.batch) * p.heads * p.n_chunks * p.d_k * p.d_v, 0xffff);
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
  // The backward's tensors (NaN where a kernel must write).
  const bool backward = i.has("backward");
  std::vector<char> dout, dstate;
  std::vector<unsigned short> dq, dk, dv, dchunks;
  std::vector<float> da, dstate0;
  if (backward) {
    dout = read(dir + "/dout.bin");
    if (i.has("dstate")) dstate = read(dir + "/dstate.bin");
    dq.assign(static_cast<size_t>(p.batch) * p.heads * T * p.d_k, 0xffff);
    dk = dq;
    dv.assign(o.size(), 0xffff);
    dchunks.assign(chunks.size(), 0xffff);
    da.assign(static_cast<size_t>(p.batch) * p.heads * T * (p.per_channel ? p.d_k : 1), nan);
    dstate0.assign(states, nan);
    p.dout = dout.data(), p.dq = dq.data(), p.dk = dk.data(), p.dv = dv.data();
    for (long long* s : {p.do_stride}) s[0] = p.v_stride[0], s[1] = p.v_stride[1], s[2] = p.v_stride[2];
    for (long long* s : {p.dq_stride, p.dk_stride}) s[0] = p.q_stride[0], s[1] = p.q_stride[1], s[2] = p.q_stride[2];
    for (long long* s : {p.dv_stride}) s[0] = p.v_stride[0], s[1] = p.v_stride[1], s[2] = p.v_stride[2];
    p.da = da.data();
    p.dstate = dstate.empty() ? nullptr : reinterpret_cast<const float*>(dstate.data());
    p.dstate0 = dstate0.data();
    p.dchunk_states = dchunks.data();
  }
  emu::smem = AE_EMU_SMEM;
  for (const char* name : {"linear_state", "linear_dstate", "linear_out", "linear_grads", "linear_step"}) {
    const std::string g = std::string("grid_") + name;
    if (!i.has(g)) continue;
    void (*entry)(const ae::LinearParams) = std::strcmp(name, "linear_state") == 0    ? ae_linear_state
                                            : std::strcmp(name, "linear_dstate") == 0 ? ae_linear_dstate
                                            : std::strcmp(name, "linear_out") == 0    ? ae_linear_out
                                            : std::strcmp(name, "linear_grads") == 0  ? ae_linear_grads
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
  if (backward) {
    write(dir + "/dq.bin", dq.data(), dq.size() * 2);
    write(dir + "/dk.bin", dk.data(), dk.size() * 2);
    write(dir + "/dv.bin", dv.data(), dv.size() * 2);
    write(dir + "/da.bin", da.data(), da.size() * 4);
    write(dir + "/dstate0.bin", dstate0.data(), dstate0.size() * 4);
  }
  return 0;
}
