#include "torch/linear.h"

#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/DeviceGuard.h>
#include <c10/util/Exception.h>
#include <fmt/ranges.h>

#include <cstdint>
#include <limits>
#include <mutex>
#include <set>

#include "plan/linear_plan.h"
#include "plan/overrides.h"
#include "runner/device_caps_cuda.h"
#include "runner/device_caps_hip.h"
#include "torch/messages.h"
#include "torch/runner_inputs.h"

namespace ae::torch_ops {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

struct LinearShapes {
  int64_t batch, heads, t_len, d_k, d_v;
  bool per_channel;
};

LinearShapes check_linear(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const at::Tensor& a, const std::optional<at::Tensor>& state,
                          bool one_token, int64_t n_states = -1) {
  AE_CHECK(VALUE, q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
           "linear attention: q, k, v must be [B, H, T, D]; got q {}, k {}, v {}", shape_str(q),
           shape_str(k), shape_str(v));
  AE_CHECK(VALUE, q.sizes() == k.sizes() && v.size(0) == q.size(0) && v.size(1) == q.size(1) &&
                      v.size(2) == q.size(2),
           "linear attention: q and k must have one shape and v their B, H, T; got q {}, k {}, v {}",
           shape_str(q), shape_str(k), shape_str(v));
  AE_CHECK(TYPE, at::isFloatingType(q.scalar_type()) && q.scalar_type() == k.scalar_type() &&
                     q.scalar_type() == v.scalar_type(),
           "linear attention: q, k, v must be one float dtype; got {}, {}, {}", dtype_str(q),
           dtype_str(k), dtype_str(v));
  LinearShapes s{q.size(0), q.size(1), q.size(2), q.size(3), v.size(3), a.dim() == 4};
  AE_CHECK(VALUE, !one_token || s.t_len == 1, "linear_step: one token (T = 1), got T = {}", s.t_len);
  const bool a_ok = (a.dim() == 3 || a.dim() == 4) && a.size(0) == s.batch && a.size(1) == s.heads &&
                    a.size(2) == s.t_len && (a.dim() == 3 || a.size(3) == s.d_k);
  AE_CHECK(VALUE, a_ok, "linear attention: the log-decays must be [B, H, T] or [B, H, T, Dk] = [{}, "
           "{}, {}, {}]; got {}", s.batch, s.heads, s.t_len, s.d_k, shape_str(a));
  AE_CHECK(TYPE, at::isFloatingType(a.scalar_type()), "linear attention: the log-decays must be "
           "float; got {}", dtype_str(a));
  for (const at::Tensor* t : {&k, &v, &a})
    AE_CHECK(VALUE, t->device() == q.device(), "linear attention: every tensor on q's device {}; "
             "got {}", device_str(q), device_str(*t));
  if (state && state->defined()) {
    const int64_t n = n_states < 0 ? s.batch : n_states;  // (packed: one per sequence)
    AE_CHECK(VALUE, state->dim() == 4 && state->size(0) == n && state->size(1) == s.heads &&
                        state->size(2) == s.d_k && state->size(3) == s.d_v,
             "linear attention: the state must be [N, H, Dk, Dv] = [{}, {}, {}, {}]; got {}", n,
             s.heads, s.d_k, s.d_v, shape_str(*state));
    AE_CHECK(VALUE, state->device() == q.device(), "linear attention: the state must be on q's "
             "device {}; got {}", device_str(q), device_str(*state));
  }
  return s;
}

void check_cu_seqlens(const at::Tensor& cu) {
  AE_CHECK(VALUE, cu.dim() == 1 && cu.size(0) >= 2 &&
                      (cu.scalar_type() == at::kInt || cu.scalar_type() == at::kLong),
           "linear attention: cu_seqlens must be a 1-D int32 / int64 tensor of at least 2 offsets; "
           "got {} {}", dtype_str(cu), shape_str(cu));
}

// Packed sequences: cu_seqlens' offsets on the host, checked (B = 1, rising from 0 to T).
std::vector<int64_t> packed_offsets(const at::Tensor& cu, const LinearShapes& s) {
  AE_CHECK(VALUE, s.batch == 1, "linear attention: packed sequences (cu_seqlens) need B = 1; got {}",
           s.batch);
  check_cu_seqlens(cu);
  const at::Tensor host = cu.to(at::kCPU, at::kLong).contiguous();
  std::vector<int64_t> c(host.data_ptr<int64_t>(), host.data_ptr<int64_t>() + host.numel());
  bool rising = c.front() == 0 && c.back() == s.t_len;
  for (size_t i = 1; i < c.size(); ++i) rising = rising && c[i] >= c[i - 1];
  AE_CHECK(VALUE, rising, "linear attention: cu_seqlens must rise from 0 to T = {}; got {}",
           s.t_len, fmt::format("{}", fmt::join(c, ", ")));
  return c;
}

at::ScalarType acc_dtype(const at::Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// seg[..., i, j] = sum of x over (j, i] along dim 2 (0 on the diagonal), -inf where j > i,
// by cumulative sums of masked copies (no difference of prefix sums). x: [B, H, C(, D)].
at::Tensor segment_sums(const at::Tensor& x) {
  const int64_t n = x.size(2);
  const at::Tensor rows =  // [.., t, j(, d)] = x_t
      x.dim() == 4 ? x.unsqueeze(3).expand({x.size(0), x.size(1), n, n, x.size(3)})
                   : x.unsqueeze(3).expand({x.size(0), x.size(1), n, n});
  const at::Tensor ones = at::ones({n, n}, x.options().dtype(at::kBool));
  std::vector<int64_t> shape(rows.dim(), 1);
  shape[2] = shape[3] = n;
  const at::Tensor below = ones.tril(-1).view(shape), lower = ones.tril().view(shape);
  const at::Tensor seg = at::cumsum(at::where(below, rows, at::zeros({}, x.options())), 2);
  return at::where(lower, seg, -kInf);
}

// The sum of x over the positions after each one along dim 2 (exclusive), no subtraction.
at::Tensor suffix_sums(const at::Tensor& x) {
  const at::Tensor rev = at::cumsum(at::flip(x, {2}), 2);
  const at::Tensor shifted = at::cat({at::zeros_like(rev.narrow(2, 0, 1)), rev.narrow(2, 0, x.size(2) - 1)}, 2);
  return at::flip(shifted, {2});
}

}  // namespace

namespace {

std::tuple<at::Tensor, at::Tensor> forward_dense(const at::Tensor& q, const at::Tensor& k,
                                                 const at::Tensor& v, const at::Tensor& a,
                                                 const std::optional<at::Tensor>& state0, double scale,
                                                 bool output_state, int64_t chunk);

}  // namespace

std::tuple<at::Tensor, at::Tensor> linear_forward_reference(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& a,
    const std::optional<at::Tensor>& state0, double scale, bool output_state, int64_t chunk,
    const std::optional<at::Tensor>& cu_seqlens) {
  if (!cu_seqlens || !cu_seqlens->defined())
    return forward_dense(q, k, v, a, state0, scale, output_state, chunk);
  const LinearShapes s = check_linear(q, k, v, a, std::nullopt, false);
  const std::vector<int64_t> c = packed_offsets(*cu_seqlens, s);
  const int64_t n = static_cast<int64_t>(c.size()) - 1;
  check_linear(q, k, v, a, state0, false, n);
  std::vector<at::Tensor> outs, states;
  for (int64_t i = 0; i < n; ++i) {  // each sequence from its own initial state
    std::optional<at::Tensor> s0;
    if (state0 && state0->defined()) s0 = state0->narrow(0, i, 1);
    auto [o, st] = forward_dense(q.narrow(2, c[i], c[i + 1] - c[i]), k.narrow(2, c[i], c[i + 1] - c[i]),
                                 v.narrow(2, c[i], c[i + 1] - c[i]), a.narrow(2, c[i], c[i + 1] - c[i]),
                                 s0, scale, output_state, chunk);
    outs.push_back(o);
    states.push_back(st);
  }
  return {at::cat(outs, 2), output_state ? at::cat(states, 0) : states.front()};
}

namespace {

std::tuple<at::Tensor, at::Tensor> forward_dense(const at::Tensor& q, const at::Tensor& k,
                                                 const at::Tensor& v, const at::Tensor& a,
                                                 const std::optional<at::Tensor>& state0, double scale,
                                                 bool output_state, int64_t chunk) {
  const LinearShapes s = check_linear(q, k, v, a, state0, false);
  const at::ScalarType acc = acc_dtype(q);
  const at::Tensor qf = q.to(acc) * scale, kf = k.to(acc), vf = v.to(acc), af = a.to(acc);
  at::Tensor state = state0 && state0->defined() ? state0->to(acc)
                                                 : at::zeros({s.batch, s.heads, s.d_k, s.d_v}, q.options().dtype(acc));
  AE_CHECK(VALUE, chunk >= 1, "linear attention: the chunk must be positive, got {}", chunk);
  std::vector<at::Tensor> outs;
  const int64_t C = chunk;
  for (int64_t t0 = 0; t0 < s.t_len; t0 += C) {
    const int64_t n = std::min(C, s.t_len - t0);
    const at::Tensor qc = qf.narrow(2, t0, n), kc = kf.narrow(2, t0, n), vc = vf.narrow(2, t0, n);
    const at::Tensor ac = af.narrow(2, t0, n);
    const at::Tensor A = at::cumsum(ac, 2), end = suffix_sums(ac), seg = segment_sums(ac);
    at::Tensor o_state, scores;
    if (s.per_channel) {
      o_state = at::matmul(qc * at::exp(A), state);
      scores = (qc.unsqueeze(3) * kc.unsqueeze(2) * at::exp(seg)).sum(-1);
      state = at::exp(A.select(2, n - 1)).unsqueeze(-1) * state +
              at::matmul((kc * at::exp(end)).transpose(-1, -2), vc);
    } else {
      o_state = at::exp(A).unsqueeze(-1) * at::matmul(qc, state);
      scores = at::matmul(qc, kc.transpose(-1, -2)) * at::exp(seg);
      state = at::exp(A.select(2, n - 1)).unsqueeze(-1).unsqueeze(-1) * state +
              at::matmul((kc * at::exp(end).unsqueeze(-1)).transpose(-1, -2), vc);
    }
    outs.push_back(o_state + at::matmul(scores, vc));
  }
  at::Tensor o = outs.empty() ? at::zeros({s.batch, s.heads, 0, s.d_v}, v.options())
                              : at::cat(outs, 2).to(v.scalar_type());
  return {o.contiguous(), output_state ? state.contiguous() : at::empty({0}, q.options().dtype(acc))};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> linear_forward_meta(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& a,
    const std::optional<at::Tensor>& state0, double /*scale*/, bool output_state, int64_t /*chunk*/,
    const std::optional<at::Tensor>& cu_seqlens) {
  const bool packed = cu_seqlens && cu_seqlens->defined();
  const LinearShapes s = check_linear(q, k, v, a, packed ? std::nullopt : state0, false);
  if (packed) check_cu_seqlens(*cu_seqlens);
  const int64_t n = packed ? cu_seqlens->size(0) - 1 : s.batch;
  const at::TensorOptions acc = q.options().dtype(acc_dtype(q));
  return {at::empty({s.batch, s.heads, s.t_len, s.d_v}, v.options()),
          output_state ? at::empty({n, s.heads, s.d_k, s.d_v}, acc) : at::empty({0}, acc)};
}

at::Tensor linear_step_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& a, at::Tensor& state, double scale) {
  const LinearShapes s = check_linear(q, k, v, a, state, true);
  const at::ScalarType acc = state.scalar_type();
  const at::Tensor decay = at::exp(a.to(acc).squeeze(2));  // [B, H] or [B, H, Dk]
  state.mul_(s.per_channel ? decay.unsqueeze(-1) : decay.unsqueeze(-1).unsqueeze(-1));
  state.add_(at::matmul(k.to(acc).transpose(-1, -2), v.to(acc)));  // k^T v: [B, H, Dk, Dv]
  return (at::matmul(q.to(acc), state) * scale).to(v.scalar_type());
}

at::Tensor linear_step_meta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& a, at::Tensor& state, double /*scale*/) {
  check_linear(q, k, v, a, state, true);
  return at::empty({q.size(0), q.size(1), 1, v.size(3)}, v.options());
}

namespace {

void warn_once(const std::string& text) {
  static std::mutex m;
  static std::set<std::string> warned;
  std::lock_guard<std::mutex> g(m);
  if (warned.insert(text).second) TORCH_WARN(text);
}

// The chunked kernels' decays: fp32, contiguous and 16-byte aligned (they copy a key channel's
// decays 16 bytes at a time; a view at an odd offset is copied).
at::Tensor kernel_decays(const at::Tensor& a_in) {
  at::Tensor a = a_in.to(at::kFloat).contiguous();
  if (reinterpret_cast<uintptr_t>(a.data_ptr()) % 16 != 0) a = a.clone();
  return a;
}

plan::DeviceCaps caps_of(const at::Tensor& q) {
  const int index = q.device().index();
  return at::detail::getCUDAHooks().hasROCM() ? runner::hip_device_caps(index)
                                              : runner::cuda_device_caps(index);
}

plan::LaunchPlan linear_plan(const at::Tensor& q, const LinearShapes& s, bool step, double scale,
                             bool backward = false, int64_t n_seqs = 0, int64_t n_chunks = 0) {
  plan::LinearProblem pb;
  pb.step = step;
  pb.backward = backward;
  pb.n_seqs = n_seqs;
  pb.n_chunks = n_chunks;
  pb.dtype = elem_type(q.scalar_type());
  pb.batch = s.batch, pb.heads = s.heads, pb.t_len = s.t_len, pb.d_k = s.d_k, pb.d_v = s.d_v;
  pb.per_channel = s.per_channel;
  pb.scale = scale;
  pb.state_cols = plan::TuningOverrides::from_environment().linear_state_cols;
  return plan::plan_linear(pb, caps_of(q));
}

// Packed sequences: cu_seqlens (int32) and the chunk map (LinearParams::chunk_map) on q's
// device, and the chunks in all.
struct PackedMaps {
  at::Tensor cu, map;
  int64_t n_seqs = 0, n_chunks = 0;
};
PackedMaps packed_maps(const std::vector<int64_t>& c, const at::Tensor& q) {
  PackedMaps m;
  m.n_seqs = static_cast<int64_t>(c.size()) - 1;
  std::vector<int32_t> first(c.size()), seq, t0;
  for (int64_t i = 0; i < m.n_seqs; ++i) {
    first[i] = static_cast<int32_t>(m.n_chunks);
    for (int64_t t = c[i]; t < c[i + 1]; t += plan::linear_chunk_tokens()) {
      seq.push_back(static_cast<int32_t>(i));
      t0.push_back(static_cast<int32_t>(t));
      ++m.n_chunks;
    }
  }
  first[m.n_seqs] = static_cast<int32_t>(m.n_chunks);
  std::vector<int32_t> all(first);
  all.insert(all.end(), seq.begin(), seq.end());
  all.insert(all.end(), t0.begin(), t0.end());
  m.map = at::tensor(all, at::TensorOptions().dtype(at::kInt)).to(q.device());
  m.cu = at::tensor(std::vector<int32_t>(c.begin(), c.end()), at::TensorOptions().dtype(at::kInt))
             .to(q.device());
  return m;
}

runner::LinearBindings bind_linear(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& o, const at::Tensor& a) {
  runner::LinearBindings b;
  b.q = ref(q), b.k = ref(k), b.v = ref(v), b.o = ref(o), b.a = ref(a);
  b.device = q.device().index();
  b.stream = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->getStream(q.device()).native_handle();
  return b;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> linear_forward_cuda(
    const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in, const at::Tensor& a_in,
    const std::optional<at::Tensor>& state0, double scale, bool output_state, int64_t chunk,
    const std::optional<at::Tensor>& cu_seqlens) {
  const bool packed = cu_seqlens && cu_seqlens->defined();
  AE_CHECK(VALUE, q_in.is_cuda(), "linear attention: q on {} with a CUDA tensor among the inputs "
           "(cu_seqlens?): put them on one device", device_str(q_in));
  const LinearShapes s = check_linear(q_in, k_in, v_in, a_in, packed ? std::nullopt : state0, false);
  c10::DeviceGuard guard(q_in.device());
  PackedMaps maps;
  if (packed) {
    maps = packed_maps(packed_offsets(*cu_seqlens, s), q_in);
    check_linear(q_in, k_in, v_in, a_in, state0, false, maps.n_seqs);
  }
  const plan::LaunchPlan plan = linear_plan(q_in, s, false, scale, false, maps.n_seqs, maps.n_chunks);
  if (!plan.ok) {
    warn_once("attention_engine: linear attention on the reference path (slower) because " + plan.reason);
    return linear_forward_reference(q_in, k_in, v_in, a_in, state0, scale, output_state, chunk,
                                    cu_seqlens);
  }
  const at::Tensor q = kernel_ready(q_in), k = kernel_ready(k_in), v = kernel_ready(v_in);
  const at::Tensor a = kernel_decays(a_in);
  const int64_t n_states = packed ? maps.n_seqs : s.batch;
  at::Tensor o = at::empty({s.batch, s.heads, s.t_len, s.d_v}, v_in.options());
  at::Tensor state = at::empty({output_state ? n_states : 0, s.heads, s.d_k, s.d_v},
                               q_in.options().dtype(at::kFloat));
  if (plan.steps.empty()) {  // nothing to run: no tokens (the final state is the initial one)
    if (output_state)
      state = state0 && state0->defined() ? state0->to(at::kFloat).clone() : state.zero_();
    return {o, output_state ? state : at::empty({0}, state.options())};
  }
  at::Tensor h0;
  if (state0 && state0->defined()) h0 = state0->to(at::kFloat).contiguous();
  at::Tensor chunks = at::empty({s.batch, s.heads, plan.linear.n_chunks, s.d_k, s.d_v}, q_in.options());
  runner::LinearBindings b = bind_linear(q, k, v, o, a);
  if (output_state) b.state = ref(state);
  if (h0.defined()) b.state0 = ref(h0);
  b.chunk_states = ref(chunks);
  if (packed) b.cu_seqlens = ref(maps.cu), b.chunk_map = ref(maps.map);
  runner::run_linear(plan, b);
  return {o, output_state ? state : at::empty({0}, state.options())};
}

at::Tensor linear_step_cuda(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                            const at::Tensor& a_in, at::Tensor& state, double scale) {
  const LinearShapes s = check_linear(q_in, k_in, v_in, a_in, state, true);
  c10::DeviceGuard guard(q_in.device());
  const plan::LaunchPlan plan = linear_plan(q_in, s, true, scale);
  const bool fits = state.scalar_type() == at::kFloat && state.is_contiguous();
  if (!plan.ok || !fits) {
    warn_once("attention_engine: linear attention's decode step on the reference path (slower) "
              "because " + (plan.ok ? std::string("the state is not a contiguous float32 tensor")
                                    : plan.reason));
    return linear_step_reference(q_in, k_in, v_in, a_in, state, scale);
  }
  const at::Tensor q = kernel_ready(q_in), k = kernel_ready(k_in), v = kernel_ready(v_in);
  const at::Tensor a = a_in.to(at::kFloat).contiguous();
  at::Tensor o = at::empty({s.batch, s.heads, 1, s.d_v}, v_in.options());
  runner::LinearBindings b = bind_linear(q, k, v, o, a);
  b.state = ref(state);
  runner::run_linear(plan, b);
  return o;
}

std::string linear_backward_reason(const at::Tensor& q, const at::Tensor& v, bool per_channel,
                                   const std::vector<int64_t>& offsets) {
  if (!q.is_cuda()) return "tensors on " + q.device().str();
  if (q.dim() != 4 || v.dim() != 4) return "q and v must be [B, H, T, D]";
  const LinearShapes s{q.size(0), q.size(1), q.size(2), q.size(3), v.size(3), per_channel};
  int64_t n_seqs = 0, n_chunks = 0;  // packed: as packed_maps counts them
  if (!offsets.empty()) {
    n_seqs = static_cast<int64_t>(offsets.size()) - 1;
    for (int64_t i = 0; i < n_seqs; ++i)
      n_chunks += plan::linear_chunks(std::max<int64_t>(0, offsets[i + 1] - offsets[i]));
  }
  c10::DeviceGuard guard(q.device());
  const plan::LaunchPlan plan = linear_plan(q, s, false, 1.0, true, n_seqs, n_chunks);
  return plan.ok ? "" : plan.reason;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_backward_meta(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& a,
    const std::optional<at::Tensor>& state0, const at::Tensor& /*dout*/,
    const std::optional<at::Tensor>& /*dstate*/, double /*scale*/, bool want_dstate0,
    const std::optional<at::Tensor>& cu_seqlens) {
  const bool packed = cu_seqlens && cu_seqlens->defined();
  const LinearShapes s = check_linear(q, k, v, a, packed ? std::nullopt : state0, false);
  if (packed) check_cu_seqlens(*cu_seqlens);
  const int64_t n = packed ? cu_seqlens->size(0) - 1 : s.batch;
  const at::TensorOptions f32 = q.options().dtype(at::kFloat);
  return {at::empty(q.sizes(), q.options()), at::empty(k.sizes(), k.options()),
          at::empty(v.sizes(), v.options()), at::empty(a.sizes(), f32),
          want_dstate0 ? at::empty({n, s.heads, s.d_k, s.d_v}, f32) : at::empty({0}, f32)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_backward_cuda(
    const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in, const at::Tensor& a_in,
    const std::optional<at::Tensor>& state0, const at::Tensor& dout_in,
    const std::optional<at::Tensor>& dstate, double scale, bool want_dstate0,
    const std::optional<at::Tensor>& cu_seqlens) {
  const bool packed = cu_seqlens && cu_seqlens->defined();
  AE_CHECK(VALUE, q_in.is_cuda(), "linear attention: q on {} with a CUDA tensor among the inputs "
           "(cu_seqlens?): put them on one device", device_str(q_in));
  const LinearShapes s = check_linear(q_in, k_in, v_in, a_in, packed ? std::nullopt : state0, false);
  AE_CHECK(VALUE, dout_in.sizes() == v_in.sizes(), "linear attention: dout must be like v {}; got {}",
           shape_str(v_in), shape_str(dout_in));
  c10::DeviceGuard guard(q_in.device());
  PackedMaps maps;
  if (packed) maps = packed_maps(packed_offsets(*cu_seqlens, s), q_in);
  const int64_t n_states = packed ? maps.n_seqs : s.batch;
  check_linear(q_in, k_in, v_in, a_in, state0, false, n_states);
  check_linear(q_in, k_in, v_in, a_in, dstate, false, n_states);
  const plan::LaunchPlan plan = linear_plan(q_in, s, false, scale, true, maps.n_seqs, maps.n_chunks);
  AE_CHECK(VALUE, plan.ok, "linear attention's fused backward: {}", plan.reason);
  const at::Tensor q = kernel_ready(q_in), k = kernel_ready(k_in), v = kernel_ready(v_in);
  const at::Tensor dout = kernel_ready(dout_in.to(q_in.scalar_type()));
  const at::Tensor a = kernel_decays(a_in);
  const at::TensorOptions f32 = q_in.options().dtype(at::kFloat);
  at::Tensor dq = at::empty(q_in.sizes(), q_in.options()), dk = at::empty(k_in.sizes(), k_in.options()),
             dv = at::empty(v_in.sizes(), v_in.options()), da = at::empty(a.sizes(), f32);
  at::Tensor ds0 = want_dstate0 ? at::empty({n_states, s.heads, s.d_k, s.d_v}, f32) : at::empty({0}, f32);
  if (plan.steps.empty()) {  // no tokens: the initial state's gradient is the final one's
    if (want_dstate0) dstate && dstate->defined() ? ds0.copy_(*dstate) : ds0.zero_();
    return {dq, dk, dv, da, ds0};
  }
  at::Tensor h0, dsf;
  if (state0 && state0->defined()) h0 = state0->to(at::kFloat).contiguous();
  if (dstate && dstate->defined() && dstate->numel()) dsf = dstate->to(at::kFloat).contiguous();
  // (a vector: an IntArrayRef of a braced list dangles once the statement ends)
  const std::vector<int64_t> per{s.batch, s.heads, plan.linear.n_chunks, s.d_k, s.d_v};
  at::Tensor chunks = at::empty(per, q_in.options()), dchunks = at::empty(per, q_in.options());
  runner::LinearBindings b = bind_linear(q, k, v, dq /*(o: unused)*/, a);
  if (h0.defined()) b.state0 = ref(h0);
  b.chunk_states = ref(chunks);
  b.dout = ref(dout), b.dq = ref(dq), b.dk = ref(dk), b.dv = ref(dv), b.da = ref(da);
  if (dsf.defined()) b.dstate = ref(dsf);
  if (want_dstate0) b.dstate0 = ref(ds0);
  b.dchunk_states = ref(dchunks);
  if (packed) b.cu_seqlens = ref(maps.cu), b.chunk_map = ref(maps.map);
  runner::run_linear(plan, b);
  return {dq, dk, dv, da, ds0};
}

}  // namespace ae::torch_ops
