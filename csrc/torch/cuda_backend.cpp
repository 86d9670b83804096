// The CUDA kernels behind the torch ops. Only the torch work is here: check the inputs, build
// the Problem, plan (csrc/plan), allocate the outputs and the plan's workspaces, hand the
// tensors to the runner (csrc/runner). A call the planner refuses (other dtypes, head dims,
// too many captured tensors, an older GPU) runs the reference executor after one warning that
// says why.
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/DeviceGuard.h>
#include <fmt/format.h>
#include <torch/library.h>

#include <limits>
#include <mutex>
#include <set>

#include "plan/planner.h"
#include "runner/device_caps_cuda.h"
#include "runner/device_caps_hip.h"
#include "runner/kernel_registry.h"
#include "torch/autotune.h"
#include "torch/runner_inputs.h"
#include "torch/checks.h"
#include "torch/cuda_backend.h"
#include "torch/paged.h"
#include "torch/pooled.h"
#include "torch/reference.h"
#include "torch/varlen.h"
#include "torch/workspaces.h"

namespace ae::torch_ops {
namespace {

// The device as the planner sees it. A ROCm build of PyTorch calls its HIP GPUs "cuda"
// devices: the HIP runtime describes them (and the runner launches through HIP modules, on the
// stream torch's guard gives, a hipStream_t there).
plan::DeviceCaps device_caps(const at::Tensor& q) {
  const int index = q.device().index();
  return at::detail::getCUDAHooks().hasROCM() ? runner::hip_device_caps(index)
                                              : runner::cuda_device_caps(index);
}

// The call's plan: the tables, or the stored tuning choice of its shape class (autotune.h).
TunedPlan plan_call(plan::OpKind kind, const ir::Variant& v, const at::Tensor& q, const Shapes& s,
                    const std::vector<at::Tensor>& buffers, double scale,
                    const std::vector<bool>& wants_grad = {}, bool deterministic = false,
                    plan::KvLayout layout = plan::KvLayout::Dense, int64_t page_size = 0,
                    const std::string& mode_key = "", int64_t pool_block = 0) {
  plan::PlanRequest r;
  r.variant = plan::VariantTraits::of(v);
  r.problem = plan::with_sparsity(problem_of(kind, q, s, buffers, scale, wants_grad), r.variant);
  r.problem.deterministic = deterministic;
  r.problem.kv_layout = layout;
  r.problem.page_size = page_size;
  r.problem.pool_block = pool_block;
  r.device = device_caps(q);
  return plan_with_tuning(std::move(r), q.device().index(), mode_key);
}

void warn_once(const std::string& text) {
  static std::mutex m;
  static std::set<std::string> warned;
  std::lock_guard<std::mutex> lock(m);
  if (warned.insert(text).second) TORCH_WARN(text);
}

void warn_fallback(const std::string& reason) {
  warn_once("attention_engine: running the reference executor (slow) because " + reason);
}

// The lengths tensor of a mask bound kv_idx < lengths[b] that the forward can take as its layout
// (ir/length_bound.h): on q's device, int32 / int64, one entry per batch (or one for all, as a
// load clamps its index); else undefined, and the mask keeps the bound.
at::Tensor kv_lengths_of(const ir::Variant& v, const at::Tensor& q, const Shapes& s,
                         const std::vector<at::Tensor>& buffers) {
  if (!v.without_kv_lengths || v.kv_lengths_buffer >= static_cast<int>(buffers.size())) return {};
  const at::Tensor& t = buffers[v.kv_lengths_buffer];
  if (t.device() != q.device() || t.dim() != 1 ||
      (t.scalar_type() != at::kLong && t.scalar_type() != at::kInt) ||
      (t.size(0) != s.batch && t.size(0) != 1))
    return {};
  return t;
}

// What a forward's layout reads besides q, k and v: each batch's key count (KvLengths and Paged
// layouts), the page table (Paged), the cumulative lengths (Varlen).
struct LayoutInputs {
  at::Tensor kv_lens, table, cu_q, cu_k;
};

// Binds what the layout reads (q_total: the packed query rows, the statistics' row count).
void bind_layout(runner::Bindings& b, const LayoutInputs& in, int64_t q_total) {
  if (in.kv_lens.defined()) {
    b.kv_lens = ref(in.kv_lens);
    if (in.kv_lens.size(0) == 1) b.kv_lens.stride[0] = 0;  // one length for every batch
  }
  if (in.table.defined()) b.page_table = ref(in.table);
  if (in.cu_q.defined()) {
    b.cu_q = ref(in.cu_q), b.cu_k = ref(in.cu_k);
    b.q_total = q_total;
  }
}

// A planned forward run into out and lse (the kernels' [B, Hq, Sq, Dv] and [B, Hq, Sq] views;
// zeros and an empty row's statistic where the plan has no steps): the tensors bound, tuned
// where the plan says, launched.
void run_forward(TunedPlan& tuned, const ir::Variant& variant, const at::Tensor& q_in,
                 const at::Tensor& k_in, const at::Tensor& v_in,
                 const std::vector<at::Tensor>& buffers, const LayoutInputs& in, at::Tensor out,
                 at::Tensor lse, const at::Tensor& block_max = {},
                 const at::Tensor& pooled = {}) {
  const plan::LaunchPlan& plan = tuned.plan;
  if (plan.steps.empty()) {  // nothing to attend to: zeros, and the statistic of an empty row
    const bool linear = variant.forward.normalize == ir::Normalize::Custom &&
                        !variant.forward.log_domain;  // L = 0; else lse = -inf
    out.zero_(), lse.fill_(linear ? 0.f : -std::numeric_limits<float>::infinity());
    return;
  }
  const at::Tensor q = kernel_ready(q_in), k = kernel_ready(k_in), v = kernel_ready(v_in);
  runner::Bindings b = bind_inputs(q, k, v, buffers);
  b.o = ref(out);
  b.lse = ref(lse);
  if (block_max.defined()) b.block_max = ref(block_max), b.pooled = ref(pooled);
  bind_layout(b, in, q_in.size(2));
  if (tuned.tune_now) tuned.plan = tune_call(tuned, variant, b, q, buffers);
  const std::vector<at::Tensor> scratch = bind_workspaces(plan, q, b, buffers);
  runner::run(plan, variant, b);
}

// The dense outputs of a forward of shapes s.
std::tuple<at::Tensor, at::Tensor> dense_outputs(const Shapes& s, const at::Tensor& q) {
  return {at::empty({s.batch, s.q_heads, s.q_len, s.head_dim_v}, q.options()),
          at::empty({s.batch, s.q_heads, s.q_len}, q.options().dtype(at::kFloat))};
}

std::tuple<at::Tensor, at::Tensor> cuda_forward(const at::Tensor& q_in, const at::Tensor& k_in,
                                                const at::Tensor& v_in,
                                                const std::vector<at::Tensor>& buffers,
                                                const std::string& key, double scale,
                                                bool /*deterministic: the backward's*/) {
  auto variant = get_variant(key);
  Shapes s = check_inputs(q_in, k_in, v_in, buffers, *variant);
  s.v_in_k = v_shares_k(k_in, v_in);
  c10::DeviceGuard guard(q_in.device());
  // A mask bound by per-batch key lengths: the variant without it, on that layout, where a
  // kernel takes it.
  at::Tensor kv_lens = kv_lengths_of(*variant, q_in, s, buffers);
  std::optional<TunedPlan> lengths_plan;
  if (kv_lens.defined()) {
    lengths_plan = plan_call(plan::OpKind::Forward, *variant->without_kv_lengths, q_in, s, buffers,
                             scale, {}, false, plan::KvLayout::KvLengths, 0, key);
    if (lengths_plan->plan.ok) variant = variant->without_kv_lengths;
    else kv_lens = at::Tensor(), lengths_plan.reset();
  }
  TunedPlan tuned = lengths_plan ? std::move(*lengths_plan)
                                 : plan_call(plan::OpKind::Forward, *variant, q_in, s, buffers, scale);
  const plan::LaunchPlan& plan = tuned.plan;
  if (!plan.ok) {
    warn_fallback(plan.reason);
    return reference_forward(q_in, k_in, v_in, buffers, key, scale);
  }
  auto [out, lse] = dense_outputs(s, q_in);
  run_forward(tuned, *variant, q_in, k_in, v_in, buffers, {kv_lens}, out, lse);
  return {out, lse};
}

// attention_pooled: the forward that also writes each row's block maxima (the planner's
// gate-training forward), pooled into the map here; where no kernel takes the call, the
// reference executor's.
std::tuple<at::Tensor, at::Tensor, at::Tensor> cuda_forward_pooled(
    const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
    const std::vector<at::Tensor>& buffers, const std::string& key, double scale, int64_t block,
    bool deterministic) {
  auto variant = get_variant(key);
  const Shapes s = check_pooled_inputs(q_in, k_in, v_in, buffers, *variant, block);
  c10::DeviceGuard guard(q_in.device());
  TunedPlan tuned = plan_call(plan::OpKind::Forward, *variant, q_in, s, buffers, scale, {}, false,
                              plan::KvLayout::Dense, 0, key, block);
  tuned.tune_now = false;  // (the tuner times ordinary forwards)
  if (!tuned.plan.ok) {
    warn_fallback(tuned.plan.reason);
    return reference_pooled(q_in, k_in, v_in, buffers, key, scale, block, deterministic);
  }
  auto [out, lse] = dense_outputs(s, q_in);
  const int64_t nq = (s.q_len + block - 1) / block, nk = (s.kv_len + block - 1) / block;
  const at::TensorOptions f32 = q_in.options().dtype(at::kFloat);
  // (templates/common/block_max_layout.h)
  at::Tensor block_max = at::full({s.batch, s.q_heads, nq, nk, block},
                                  -std::numeric_limits<float>::infinity(), f32);
  at::Tensor pooled = at::empty({s.batch, s.q_heads, nq, nk}, f32);
  // (The plan's pool_map step turns block_max into the map; a plan without steps has nothing
  // to attend to: a map of zeros.)
  run_forward(tuned, *variant, q_in, k_in, v_in, buffers, {}, out, lse, block_max, pooled);
  if (tuned.plan.steps.empty()) pooled.zero_();
  return {out, lse, pooled};
}

// The plan of an attention_paged call on the paged layout (common/kv_layout.h PagedLayout),
// with the mask's length bound as the key counts where it has one (*kv_lens: its tensor, then
// planned for the variant without the bound); refused (ok false, with the reason) where no
// kernel takes the pages.
TunedPlan plan_paged(const ir::Variant& variant, const at::Tensor& q, const Shapes& s,
                     const std::vector<at::Tensor>& buffers, double scale, int64_t page_size,
                     const std::string& key, at::Tensor* kv_lens) {
  *kv_lens = kv_lengths_of(variant, q, s, buffers);
  const ir::Variant& use = kv_lens->defined() ? *variant.without_kv_lengths : variant;
  TunedPlan tuned = plan_call(plan::OpKind::Forward, use, q, s, buffers, scale, {}, false,
                              plan::KvLayout::Paged, page_size, key);
  tuned.tune_now = false;  // (the tuner times dense calls only)
  return tuned;
}

// attention_paged on a forward that reads the pages in place (the sm90 forward where one of its
// tiles fits the pages; the sm80 forward and decode templates, any page size, elsewhere on
// NVIDIA GPUs; the gfx90a forward); otherwise (float32, ...) the pages gathered into dense
// tensors for the dense forward.
std::tuple<at::Tensor, at::Tensor> cuda_forward_paged(const at::Tensor& q_in, const at::Tensor& k_in,
                                                      const at::Tensor& v_in,
                                                      const std::vector<at::Tensor>& buffers,
                                                      const std::string& key, double scale,
                                                      const at::Tensor& table_in) {
  auto variant = get_variant(key);
  Shapes s = check_paged_inputs(q_in, k_in, v_in, buffers, *variant, table_in);
  s.v_in_k = v_shares_k(k_in, v_in);
  c10::DeviceGuard guard(q_in.device());
  at::Tensor kv_lens;
  TunedPlan tuned = plan_paged(*variant, q_in, s, buffers, scale, k_in.size(2), key, &kv_lens);
  if (!tuned.plan.ok) {  // the pages gathered into a contiguous cache, for the dense forward
    warn_once("attention_engine: a paged KV cache is gathered into a contiguous one per call "
              "(slower) because " + tuned.plan.reason);
    const at::Tensor k = dense_from_pages(k_in, table_in);
    // (V in K, MLA's latent cache: gathered once, V its first columns)
    const at::Tensor v = s.v_in_k ? k.narrow(3, 0, v_in.size(3)) : dense_from_pages(v_in, table_in);
    return cuda_forward(q_in, k, v, buffers, key, scale, false);
  }
  const ir::Variant& use = kv_lens.defined() ? *variant->without_kv_lengths : *variant;
  const at::Tensor table = table_in.stride(1) == 1 ? table_in : table_in.contiguous();
  auto [out, lse] = dense_outputs(s, q_in);
  run_forward(tuned, use, q_in, k_in, v_in, buffers, {kv_lens, table}, out, lse);
  return {out, lse};
}

// The plan of a varlen call on the packed-sequence layout, for the variant without its key bound
// (whose lengths tensor the layout reads as the key counts: *kv_lens); refused (ok false, with
// the reason) where that tensor is not one the kernels take.
TunedPlan plan_varlen(plan::OpKind kind, const ir::Variant& variant, const at::Tensor& q,
                      const Shapes& s, const std::vector<at::Tensor>& buffers, double scale,
                      const std::vector<bool>& wants_grad, const std::string& key,
                      at::Tensor* kv_lens) {
  *kv_lens = kv_lengths_of(variant, q, s, buffers);
  const bool deterministic =
      kind == plan::OpKind::Backward && at::globalContext().deterministicAlgorithms();
  TunedPlan tuned = plan_call(kind, *variant.without_kv_lengths, q, s, buffers, scale, wants_grad,
                              deterministic, plan::KvLayout::Varlen, 0, key);
  if (!kv_lens->defined()) {
    tuned.plan.ok = false;
    tuned.plan.reason = "the key bound's lengths are not an int tensor of one entry per sequence "
                        "on q's device";
  }
  tuned.tune_now = false;  // (the tuner times dense calls only)
  return tuned;
}

// attention_varlen on a forward's packed-sequence layout (common/kv_layout.h VarlenLayout),
// the variant without its key bound (the kernels take each sequence's key count from
// cu_seqlens_k); elsewhere (a plan the layout cannot take) the sequences padded into a dense
// batch.
std::tuple<at::Tensor, at::Tensor> cuda_forward_varlen(
    const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
    const std::vector<at::Tensor>& buffers, const std::string& key, double scale,
    const at::Tensor& cu_q, const at::Tensor& cu_k, int64_t max_q, int64_t max_k) {
  auto variant = get_variant(key);
  const Shapes s = check_varlen_inputs(q_in, k_in, v_in, buffers, *variant, cu_q, cu_k, max_q, max_k);
  c10::DeviceGuard guard(q_in.device());
  at::Tensor kv_lens;
  TunedPlan tuned =
      plan_varlen(plan::OpKind::Forward, *variant, q_in, s, buffers, scale, {}, key, &kv_lens);
  if (!tuned.plan.ok) {
    warn_once("attention_engine: packed sequences are padded into a batch per call (slower) "
              "because " + tuned.plan.reason);
    auto [out, lse] = cuda_forward(dense_from_varlen(q_in, cu_q, max_q), dense_from_varlen(k_in, cu_k, max_k),
                                   dense_from_varlen(v_in, cu_k, max_k), buffers, key, scale, false);
    return varlen_from_dense(out, lse, cu_q, q_in.size(0));
  }
  // The kernels' views: [1, heads, tokens, dim] over the token-major tensors.
  auto four = [](const at::Tensor& x) { return x.transpose(0, 1).unsqueeze(0); };
  at::Tensor out = at::empty({q_in.size(0), s.q_heads, s.head_dim_v}, q_in.options());
  at::Tensor lse = at::empty({s.q_heads, q_in.size(0)}, q_in.options().dtype(at::kFloat));
  const at::Tensor cq = cu_q.contiguous(), ck = cu_k.contiguous();
  run_forward(tuned, *variant->without_kv_lengths, four(q_in), four(k_in), four(v_in), buffers,
              {kv_lens, {}, cq, ck},
              four(out), lse.unsqueeze(0));
  return {out, lse};
}

// A planned backward run into dq, dk, dv (the kernels' [B, H, S, D] views): the captured
// tensors' gradients returned.
std::vector<at::Tensor> run_backward(TunedPlan& tuned, const ir::Variant& variant,
                                     const at::Tensor& dout_in, const std::optional<at::Tensor>& dlse,
                                     const at::Tensor& q_in, const at::Tensor& k_in,
                                     const at::Tensor& v_in, const at::Tensor& out,
                                     const at::Tensor& lse, const std::vector<at::Tensor>& buffers,
                                     const std::vector<bool>& wants_grad, const LayoutInputs& in,
                                     at::Tensor dq, at::Tensor dk, at::Tensor dv) {
  const plan::LaunchPlan& plan = tuned.plan;
  const at::Tensor q = kernel_ready(q_in), k = kernel_ready(k_in), v = kernel_ready(v_in);
  std::vector<at::Tensor> grads(buffers.size());  // fp32, the kernels add into them
  for (size_t i = 0; i < buffers.size(); ++i)
    if (wants_grad[i]) grads[i] = at::zeros(buffers[i].sizes(), buffers[i].options().dtype(at::kFloat));
  if (plan.steps.empty()) {  // no scores: every gradient is zero
    dq.zero_(), dk.zero_(), dv.zero_();
  } else {
    runner::Bindings b = bind_inputs(q, k, v, buffers, grads);
    const at::Tensor dout = kernel_ready(dout_in.to(q.scalar_type()));
    b.dout = ref(dout);
    b.dq = ref(dq);
    b.dk = ref(dk);
    b.dv = ref(dv);
    bind_layout(b, in, q_in.size(2));
    // The prep pass's inputs for the row statistics (softmax): delta = rowsum(dO * O) - dlse
    // and the log2 LSE.
    at::Tensor o, lse_f, dlse_f;
    if (plan.workspace(plan::WorkspaceId::Delta)) {
      o = kernel_ready(out.to(q.scalar_type()));
      lse_f = lse.to(at::kFloat).contiguous();
      if (dlse && dlse->defined()) dlse_f = dlse->to(at::kFloat).contiguous();
      b.o = ref(o);
      b.lse = ref(lse_f);
      b.dlse = ref(dlse_f);
    }
    if (tuned.tune_now) {  // the timing runs added into the captured tensors' gradients
      tuned.plan = tune_call(tuned, variant, b, q, buffers);
      for (at::Tensor& g : grads)
        if (g.defined()) g.zero_();
    }
    const std::vector<at::Tensor> scratch = bind_workspaces(plan, q, b, buffers);
    runner::run(plan, variant, b);
  }
  std::vector<at::Tensor> dbuf(buffers.size());
  for (size_t i = 0; i < buffers.size(); ++i)
    dbuf[i] = grads[i].defined() ? grads[i].to(buffers[i].scalar_type())
                                 : at::empty({0}, buffers[i].options());
  return dbuf;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> cuda_backward(
    const at::Tensor& dout_in, const std::optional<at::Tensor>& dlse, const at::Tensor& q_in,
    const at::Tensor& k_in, const at::Tensor& v_in, const at::Tensor& out, const at::Tensor& lse,
    const std::vector<at::Tensor>& buffers, const std::string& key, double scale,
    const c10::List<bool>& buffer_grads, bool deterministic_asked) {
  auto variant = get_variant(key);
  const Shapes s = check_inputs(q_in, k_in, v_in, buffers, *variant);
  c10::DeviceGuard guard(q_in.device());
  std::vector<bool> wants_grad(buffers.size(), false);
  bool buffer_grad = false;
  for (size_t i = 0; i < buffers.size() && i < buffer_grads.size(); ++i)
    buffer_grad |= wants_grad[i] = buffer_grads.get(i);
  // Deterministic when compiled so or under torch.use_deterministic_algorithms: dQ's additions
  // go in a fixed order (common/dq_order.h); dK and dV are sums in registers anyway.
  const bool deterministic = deterministic_asked || at::globalContext().deterministicAlgorithms();
  TunedPlan tuned =
      plan_call(plan::OpKind::Backward, *variant, q_in, s, buffers, scale, wants_grad, deterministic);
  const plan::LaunchPlan& plan = tuned.plan;
  if (!plan.ok) {
    warn_fallback(plan.reason);
    return reference_backward(dout_in, dlse, q_in, k_in, v_in, out, lse, buffers, key, scale,
                              buffer_grads);
  }
  // Captured tensors' gradients are still fp32 atomics in no fixed order.
  if (buffer_grad && deterministic) {
    constexpr const char* what =
        "attention_engine's fused backward of a variant whose captured tensors want gradients "
        "(they are summed with fp32 atomics in no fixed order; dq, dk and dv are deterministic)";
    TORCH_CHECK(!deterministic_asked, what, ": compiled with deterministic=True. Detach the "
                "captured tensors (or drop deterministic=True) to run it.");
    at::globalContext().alertNotDeterministic(what);  // raises, or warns with warn_only
  }
  at::Tensor dq = at::empty({s.batch, s.q_heads, s.q_len, s.head_dim_qk}, q_in.options());
  at::Tensor dk = at::empty({s.batch, s.kv_heads, s.kv_len, s.head_dim_qk}, k_in.options());
  at::Tensor dv = at::empty({s.batch, s.kv_heads, s.kv_len, s.head_dim_v}, v_in.options());
  std::vector<at::Tensor> dbuf = run_backward(tuned, *variant, dout_in, dlse, q_in, k_in, v_in, out,
                                              lse, buffers, wants_grad, {}, dq, dk, dv);
  return {dq, dk, dv, dbuf};
}

// attention_varlen's backward on the packed-sequence layout (the variant without its key bound,
// as the forward ran), not deterministic; elsewhere the sequences padded into a batch for the
// dense backward.
std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> cuda_backward_varlen(
    const at::Tensor& dout, const std::optional<at::Tensor>& dlse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    const std::vector<at::Tensor>& buffers, const std::string& key, double scale,
    const c10::List<bool>& buffer_grads, const at::Tensor& cu_q, const at::Tensor& cu_k,
    int64_t max_q, int64_t max_k) {
  auto variant = get_variant(key);
  const Shapes s = check_varlen_inputs(q, k, v, buffers, *variant, cu_q, cu_k, max_q, max_k);
  c10::DeviceGuard guard(q.device());
  std::vector<bool> wants_grad(buffers.size(), false);
  for (size_t i = 0; i < buffers.size() && i < buffer_grads.size(); ++i) wants_grad[i] = buffer_grads.get(i);
  at::Tensor kv_lens;
  TunedPlan tuned = plan_varlen(plan::OpKind::Backward, *variant, q, s, buffers, scale, wants_grad,
                                key, &kv_lens);
  if (!tuned.plan.ok) {
    warn_once("attention_engine: packed sequences are padded into a batch for the backward "
              "(slower) because " + tuned.plan.reason);
    return varlen_backward_padded(cuda_backward, dout, dlse, q, k, v, out, lse, buffers, key, scale,
                                  buffer_grads, cu_q, cu_k, max_q, max_k);
  }
  auto four = [](const at::Tensor& x) { return x.transpose(0, 1).unsqueeze(0); };
  at::Tensor dq = at::empty(q.sizes(), q.options()), dk = at::empty(k.sizes(), k.options()),
             dv = at::empty(v.sizes(), v.options());
  const at::Tensor cq = cu_q.contiguous(), ck = cu_k.contiguous();
  std::optional<at::Tensor> dlse3;
  if (dlse && dlse->defined()) dlse3 = dlse->unsqueeze(0);
  std::vector<at::Tensor> dbuf =
      run_backward(tuned, *variant->without_kv_lengths, four(dout), dlse3, four(q), four(k), four(v), four(out),
                   lse.unsqueeze(0), buffers, wants_grad, {kv_lens, {}, cq, ck}, four(dq), four(dk),
                   four(dv));
  return {dq, dk, dv, dbuf};
}

}  // namespace

std::string backend_for(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const std::vector<at::Tensor>& buffers, const std::string& key,
                        bool backward) {
  auto variant = get_variant(key);
  Shapes s = check_inputs(q, k, v, buffers, *variant);
  if (!q.is_cuda()) return "reference: tensors on " + q.device().str();
  s.v_in_k = v_shares_k(k, v);
  // The backward's family depends on which captured tensors want gradients (the planner's
  // captured_grads): those that require them, as autograd will ask.
  std::vector<bool> wants_grad;
  for (const at::Tensor& t : buffers) wants_grad.push_back(t.requires_grad());
  if (backward) {
    const plan::LaunchPlan bwd =
        plan_call(plan::OpKind::Backward, *variant, q, s, buffers, 1.0, wants_grad).plan;
    return bwd.ok ? bwd.family : "reference: " + bwd.reason;
  }
  std::string layout;  // the forward's, where the mask's length bound moved into it
  if (kv_lengths_of(*variant, q, s, buffers).defined()) {
    const plan::LaunchPlan lp = plan_call(plan::OpKind::Forward, *variant->without_kv_lengths, q, s,
                                          buffers, 1.0, {}, false, plan::KvLayout::KvLengths).plan;
    if (lp.ok) layout = " (forward: per-batch key lengths)";
  }
  const plan::LaunchPlan fwd = plan_call(plan::OpKind::Forward, *variant, q, s, buffers, 1.0).plan;
  if (!fwd.ok) return "reference: " + fwd.reason;
  const plan::LaunchPlan bwd =
      plan_call(plan::OpKind::Backward, *variant, q, s, buffers, 1.0, wants_grad).plan;
  if (!bwd.ok) return fwd.family + layout + " (backward on the reference: " + bwd.reason + ")";
  return fwd.family + layout;
}

std::string varlen_backend_for(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const std::vector<at::Tensor>& buffers, const std::string& key,
                               const at::Tensor& cu_q, const at::Tensor& cu_k, int64_t max_q,
                               int64_t max_k) {
  auto variant = get_variant(key);
  const Shapes s = check_varlen_inputs(q, k, v, buffers, *variant, cu_q, cu_k, max_q, max_k);
  if (!q.is_cuda()) return "reference: tensors on " + q.device().str();
  at::Tensor kv_lens;
  const plan::LaunchPlan lp =
      plan_varlen(plan::OpKind::Forward, *variant, q, s, buffers, 1.0, {}, key, &kv_lens).plan;
  return lp.ok ? lp.family + " (packed sequences)" : "padded: " + lp.reason;
}

std::string paged_backend_for(const at::Tensor& q, const at::Tensor& k_pages,
                              const at::Tensor& v_pages, const std::vector<at::Tensor>& buffers,
                              const std::string& key, const at::Tensor& table) {
  auto variant = get_variant(key);
  Shapes s = check_paged_inputs(q, k_pages, v_pages, buffers, *variant, table);
  if (!q.is_cuda()) return "reference: tensors on " + q.device().str();
  s.v_in_k = v_shares_k(k_pages, v_pages);
  at::Tensor kv_lens;
  const plan::LaunchPlan p =
      plan_paged(*variant, q, s, buffers, 1.0, k_pages.size(2), key, &kv_lens).plan;
  return p.ok ? p.family + " (pages in place)" : "gathered: " + p.reason;
}

void clear_kernel_caches() {
  runner::clear_kernels();
  clear_workspace_cache();
}

}  // namespace ae::torch_ops

TORCH_LIBRARY_IMPL(attention_engine, CUDA, m) {
  m.impl("attention", &ae::torch_ops::cuda_forward);
  m.impl("attention_backward", &ae::torch_ops::cuda_backward);
  m.impl("attention_paged", &ae::torch_ops::cuda_forward_paged);
  m.impl("attention_pooled", &ae::torch_ops::cuda_forward_pooled);
  m.impl("attention_varlen", &ae::torch_ops::cuda_forward_varlen);
  m.impl("attention_varlen_backward", &ae::torch_ops::cuda_backward_varlen);
}
