// The CUDA kernels behind the torch ops: bf16/fp16 tensors on a GPU of compute capability
// 8.0+ run the mma.sync templates (forward, backward, mask block states), and on sm_90 the
// forward runs the TMA + wgmma template where it has a tile configuration; anything they
// cannot handle (other dtypes, head dims, too many captured tensors) runs the reference
// executor after one warning that says why.
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>
#include <set>

#include "common/params.h"
#include "jit/cuda_driver.h"
#include "jit/launch.h"
#include "torch/checks.h"
#include "torch/cuda_backend.h"
#include "torch/kernel_registry.h"
#include "torch/messages.h"
#include "torch/reference.h"
#include "torch/tma_maps.h"

namespace ae::torch_ops {
namespace {

using codegen::Kind;
using codegen::KernelSpec;

const char* dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kShort: return "int16";
    case at::kChar: return "int8";
    case at::kByte: return "uint8";
    case at::kBool: return "bool";
    default: return "";
  }
}

bool sm90_disabled() {
  const char* e = std::getenv("AE_DISABLE_SM90");
  return e && *e && std::string(e) != "0";
}

struct Plan {
  bool ok = false;
  std::string reason;
  KernelSpec spec;
};

Plan plan(Kind kind, const ir::Variant& v, const at::Tensor& q, const Shapes& s,
          const std::vector<at::Tensor>& buffers) {
  Plan pl;
  const auto dt = q.scalar_type();
  if (dt != at::kBFloat16 && dt != at::kHalf) {
    pl.reason = fmt::format("{} inputs have no fused kernel (bf16 and fp16 do)", dtype_str(q));
    return pl;
  }
  if (buffers.size() > static_cast<size_t>(kMaxBuffers)) {
    pl.reason = fmt::format("{} captured tensors; kernels take at most {}", buffers.size(), kMaxBuffers);
    return pl;
  }
  std::vector<std::string> dtypes;
  for (const at::Tensor& b : buffers) {
    if (b.dim() > kMaxRank || *dtype_name(b.scalar_type()) == '\0') {
      pl.reason = fmt::format("a captured tensor of rank {} and dtype {} has no kernel load",
                              b.dim(), dtype_str(b));
      return pl;
    }
    dtypes.push_back(dtype_name(b.scalar_type()));
  }
  const int device = q.device().index();
  const jit::CudaDeviceInfo& info = jit::cuda_device_info(device);
  if (info.major < 8) {
    pl.reason = fmt::format("compute capability {}.{}: the kernels need 8.0 or newer", info.major,
                            info.minor);
    return pl;
  }
  // Hopper runs the TMA + wgmma forward where its tile table has a configuration
  // (AE_DISABLE_SM90=1 keeps the mma.sync one, for comparisons); the backward is sm80's.
  if (kind == Kind::Forward && info.major == 9 && info.minor == 0 && !sm90_disabled()) {
    codegen::TileChoice c9 = codegen::choose_sm90(static_cast<int>(s.head_dim_qk),
                                                  static_cast<int>(s.head_dim_v),
                                                  dt == at::kBFloat16, codegen::tile_hints(v),
                                                  info.smem_optin);
    if (c9.ok) {
      pl.spec = c9.spec;
      pl.spec.buffer_dtypes = dtypes;
      pl.ok = true;
      return pl;
    }
  }
  codegen::TileChoice c = codegen::choose_sm80(
      kind, static_cast<int>(s.head_dim_qk), static_cast<int>(s.head_dim_v), dt == at::kBFloat16,
      codegen::tile_hints(v), info.smem_optin);
  if (!c.ok) {
    pl.reason = c.reason;
    return pl;
  }
  pl.spec = c.spec;
  pl.spec.arch = sm80_arch_of(device);
  pl.spec.buffer_dtypes = dtypes;
  pl.ok = true;
  return pl;
}

void warn_fallback(const std::string& reason) {
  static std::mutex m;
  static std::set<std::string> warned;
  std::lock_guard<std::mutex> lock(m);
  if (warned.insert(reason).second)
    TORCH_WARN(fmt::format("attention_engine: running the reference executor (slow) because {}",
                           reason));
}

// Kernels read rows with 16-byte copies (sm80) or TMA (sm90): the last dim contiguous, the
// data and the strides of dims of size > 1 nonzero multiples of 16 bytes.
at::Tensor kernel_ready(const at::Tensor& t) {
  return tma_unfit(t).empty() ? t : t.contiguous();
}

void strides3(long long (&dst)[3], const at::Tensor& t) {
  for (int i = 0; i < 3; ++i) dst[i] = t.stride(i);
}

AttnParams base_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       const Shapes& s, double scale) {
  AttnParams p{};
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  strides3(p.q_stride, q);
  strides3(p.k_stride, k);
  strides3(p.v_stride, v);
  p.batch = static_cast<int>(s.batch);
  p.q_heads = static_cast<int>(s.q_heads);
  p.kv_heads = static_cast<int>(s.kv_heads);
  p.group = static_cast<int>(s.group());
  p.q_len = static_cast<int>(s.q_len);
  p.kv_len = static_cast<int>(s.kv_len);
  p.scale = static_cast<float>(scale);
  p.scale_log2 = static_cast<float>(scale * 1.4426950408889634);
  return p;
}

// The forward's p.head_group (templates/common/grid_order.h). Without a mask every CTA does
// the same work and one head at a time keeps K and V in L2 best: 1. With one, as many heads
// as fit their K and V, per_head bytes each, into a budget of L2. Measured on the H200
// (bench/RESULTS.md): the sm90 forward did best at 8 MB (4 heads at 4k tokens, 1 at 16k), the
// sm80 one, at half its speed and so half the bandwidth, with 32 MB (16 and 4).
// AE_HEAD_GROUP=N sets N, for experiments.
int head_group(codegen::Family family, bool masked, long long per_head, int heads) {
  if (const char* e = std::getenv("AE_HEAD_GROUP"); e && *e) return std::max(1, std::atoi(e));
  if (!masked) return 1;
  const long long budget = (family == codegen::Family::Sm90 ? 8ll : 32ll) << 20;
  return static_cast<int>(std::clamp<long long>(budget / std::max(1ll, per_head), 1, heads));
}

VariantArgs variant_args(const std::vector<at::Tensor>& buffers,
                         const std::vector<at::Tensor>& grads = {}) {
  VariantArgs va{};
  for (size_t i = 0; i < buffers.size(); ++i) {
    BufferArg& a = va.buf[i];
    a.data = buffers[i].data_ptr();
    a.grad = i < grads.size() && grads[i].defined() ? grads[i].data_ptr<float>() : nullptr;
    for (int d = 0; d < buffers[i].dim(); ++d) {
      a.stride[d] = buffers[i].stride(d);
      a.size[d] = buffers[i].size(d);
      a.gstride[d] = a.grad ? grads[i].stride(d) : 0;
    }
  }
  return va;
}

void* current_stream(const at::Tensor& t) {
  return c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->getStream(t.device()).native_handle();
}

void launch(const jit::KernelPtr& kernel, jit::Dim3 grid, int threads, int smem,
            const at::Tensor& on, void** args) {
  jit::LaunchConfig cfg;
  cfg.grid = grid;
  cfg.block = {static_cast<unsigned>(threads), 1, 1};
  cfg.dynamic_smem = static_cast<unsigned>(smem);
  cfg.stream = current_stream(on);
  cfg.device = on.device().index();
  jit::launch_kernel(*kernel, cfg, args);
}

// Block states of the mask for tiles of block_m x block_n; undefined when there is no mask.
// Cached when the mask reads no captured tensor (its values could change between calls).
at::Tensor block_states(const ir::Variant& v, AttnParams& p, const KernelSpec& spec,
                        int block_m, int block_n, const std::vector<at::Tensor>& buffers,
                        const at::Tensor& like) {
  p.n_q_blocks = (p.q_len + block_m - 1) / block_m;
  p.n_kv_blocks = (p.kv_len + block_n - 1) / block_n;
  if (!v.analysis.has_mask) return {};
  const bool per_b = (v.analysis.mask_deps & ir::kDepB) != 0;
  const bool per_h = (v.analysis.mask_deps & ir::kDepH) != 0;
  const bool cacheable = (v.analysis.mask_deps & ir::kDepBuffer) == 0;
  const int nb = per_b ? p.batch : 1, nh = per_h ? p.q_heads : 1;
  const std::string key = fmt::format("{}|{}|{}|{}x{}|{}|{}|{}", v.key, p.q_len, p.kv_len, block_m,
                                      block_n, nb, nh, like.device().index());
  static std::mutex m;
  static std::map<std::string, at::Tensor> cache;
  at::Tensor state;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(m);
    auto it = cache.find(key);
    if (it != cache.end()) state = it->second;
  }
  if (!state.defined()) {
    state = at::empty({nb * nh, p.n_q_blocks, p.n_kv_blocks}, like.options().dtype(at::kByte));
    KernelSpec bs = spec;
    bs.kind = Kind::BlockState;
    bs.buffer_grads.clear();  // the same kernel for the forward's and the backward's states
    jit::KernelPtr kernel = get_kernel(v, bs);
    VariantArgs va = variant_args(buffers);
    unsigned char* out = state.data_ptr<unsigned char>();
    int pb = per_b, ph = per_h;
    void* args[] = {&p, &va, &out, &block_m, &block_n, &pb, &ph};
    launch(kernel, {static_cast<unsigned>(p.n_kv_blocks), static_cast<unsigned>(p.n_q_blocks),
                    static_cast<unsigned>(nb * nh)},
           128, 0, like, args);
    if (cacheable) {
      std::lock_guard<std::mutex> lock(m);
      if (cache.size() > 64) cache.clear();
      cache.emplace(key, state);
    }
  }
  p.block_state = state.data_ptr<unsigned char>();
  const long long per_tile = static_cast<long long>(p.n_q_blocks) * p.n_kv_blocks;
  p.state_stride_h = per_h ? per_tile : 0;
  p.state_stride_b = per_b ? per_tile * nh : 0;
  return state;
}

std::tuple<at::Tensor, at::Tensor> cuda_forward(const at::Tensor& q_in, const at::Tensor& k_in,
                                                const at::Tensor& v_in,
                                                const std::vector<at::Tensor>& buffers,
                                                const std::string& key, double scale) {
  auto variant = get_variant(key);
  const Shapes s = check_inputs(q_in, k_in, v_in, buffers, *variant);
  c10::DeviceGuard guard(q_in.device());
  Plan pl = plan(Kind::Forward, *variant, q_in, s, buffers);
  if (!pl.ok) {
    warn_fallback(pl.reason);
    return reference_forward(q_in, k_in, v_in, buffers, key, scale);
  }
  const at::Tensor q = kernel_ready(q_in), k = kernel_ready(k_in), v = kernel_ready(v_in);
  at::Tensor out = at::empty({s.batch, s.q_heads, s.q_len, s.head_dim_v}, q.options());
  at::Tensor lse = at::empty({s.batch, s.q_heads, s.q_len}, q.options().dtype(at::kFloat));
  if (s.q_len == 0 || s.batch == 0) return {out, lse};
  if (s.kv_len == 0) return {out.zero_(), lse.fill_(-std::numeric_limits<float>::infinity())};
  AttnParams p = base_params(q, k, v, s, scale);
  p.o = out.data_ptr();
  strides3(p.o_stride, out);
  p.lse = lse.data_ptr<float>();
  const long long kv_bytes = s.kv_len * (s.head_dim_qk + s.head_dim_v) * 2 / s.group();
  p.head_group = head_group(pl.spec.family, variant->analysis.has_mask, kv_bytes, p.q_heads);
  at::Tensor state = block_states(*variant, p, pl.spec, pl.spec.block_m, pl.spec.block_n, buffers, q);
  jit::KernelPtr kernel = get_kernel(*variant, pl.spec);
  VariantArgs va = variant_args(buffers);
  const jit::Dim3 grid{static_cast<unsigned>(p.n_q_blocks), static_cast<unsigned>(s.q_heads),
                       static_cast<unsigned>(s.batch)};
  if (pl.spec.family == codegen::Family::Sm90) {
    TmaDesc tq = tma_map(q, pl.spec.block_m), tk = tma_map(k, pl.spec.block_n),
            tv = tma_map(v, pl.spec.block_n);
    void* args[] = {&p, &va, &tq, &tk, &tv};
    launch(kernel, grid, pl.spec.threads(), codegen::smem_bytes(pl.spec), q, args);
  } else {
    void* args[] = {&p, &va};
    launch(kernel, grid, pl.spec.threads(), codegen::smem_bytes(pl.spec), q, args);
  }
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> cuda_backward(
    const at::Tensor& dout_in, const std::optional<at::Tensor>& dlse, const at::Tensor& q_in,
    const at::Tensor& k_in, const at::Tensor& v_in, const at::Tensor& out, const at::Tensor& lse,
    const std::vector<at::Tensor>& buffers, const std::string& key, double scale,
    const c10::List<bool>& buffer_grads) {
  auto variant = get_variant(key);
  const Shapes s = check_inputs(q_in, k_in, v_in, buffers, *variant);
  c10::DeviceGuard guard(q_in.device());
  Plan pl = plan(Kind::Backward, *variant, q_in, s, buffers);
  if (!pl.ok || s.q_len == 0 || s.kv_len == 0 || s.batch == 0) {
    if (!pl.ok) warn_fallback(pl.reason);
    return reference_backward(dout_in, dlse, q_in, k_in, v_in, out, lse, buffers, key, scale,
                              buffer_grads);
  }
  const at::Tensor q = kernel_ready(q_in), k = kernel_ready(k_in), v = kernel_ready(v_in);
  const at::Tensor dout = kernel_ready(dout_in.to(q.scalar_type()));
  // delta = rowsum(dO * O) - dlse and the log2 LSE, both per query row (softmax only), are
  // made by the prep pass below, which also zeroes dq_accum.
  const bool softmax = variant->forward.normalize == ir::Normalize::Softmax;
  at::Tensor delta, lse2, o, lse_f, dlse_f;
  if (softmax) {
    delta = at::empty({s.batch, s.q_heads, s.q_len}, q.options().dtype(at::kFloat));
    lse2 = at::empty_like(delta);
    o = kernel_ready(out.to(q.scalar_type()));
    lse_f = lse.to(at::kFloat).contiguous();
    if (dlse && dlse->defined()) dlse_f = dlse->to(at::kFloat).contiguous();
  }
  at::Tensor dk = at::empty({s.batch, s.kv_heads, s.kv_len, s.head_dim_qk}, k.options());
  at::Tensor dv = at::empty({s.batch, s.kv_heads, s.kv_len, s.head_dim_v}, v.options());
  std::vector<at::Tensor> grads(buffers.size());
  pl.spec.buffer_grads.assign(buffers.size(), false);  // the kernel has atomics for these only
  for (size_t i = 0; i < buffers.size(); ++i)
    if (buffer_grads.get(i)) {
      grads[i] = at::zeros(buffers[i].sizes(), buffers[i].options().dtype(at::kFloat));
      pl.spec.buffer_grads[i] = true;
    }

  AttnParams p = base_params(q, k, v, s, scale);
  // The kernel reads the LSE as lse2 (the prep pass's); p.lse stays null.
  p.dout = dout.data_ptr();
  strides3(p.do_stride, dout);
  p.delta = delta.defined() ? delta.data_ptr<float>() : nullptr;
  p.lse2 = lse2.defined() ? lse2.data_ptr<float>() : nullptr;
  p.dk = dk.data_ptr();
  p.dv = dv.data_ptr();
  strides3(p.dk_stride, dk);
  strides3(p.dv_stride, dv);
  at::Tensor state = block_states(*variant, p, pl.spec, pl.spec.block_m, pl.spec.block_n, buffers, q);
  // Rows padded to whole query blocks (p.n_q_blocks of block_m, set just above; the template's
  // kBlockM, which the kernel's row stride uses, is the table's block_m): the kernel adds a
  // block's dQ without row tests.
  at::Tensor dq_accum =
      at::empty({s.batch, s.q_heads, static_cast<int64_t>(p.n_q_blocks) * pl.spec.block_m,
                 s.head_dim_qk},
                q.options().dtype(at::kFloat));
  p.dq_accum = dq_accum.data_ptr<float>();
  at::Tensor dq = at::empty({s.batch, s.q_heads, s.q_len, s.head_dim_qk}, q.options());
  BwdRowParams rp{};
  rp.dout = dout.data_ptr();
  strides3(rp.do_stride, dout);
  if (softmax) {
    rp.o = o.data_ptr();
    strides3(rp.o_stride, o);
    rp.lse = lse_f.data_ptr<float>();
    rp.dlse = dlse_f.defined() ? dlse_f.data_ptr<float>() : nullptr;
    rp.delta = delta.data_ptr<float>();
    rp.lse2 = lse2.data_ptr<float>();
  }
  rp.dq_accum = p.dq_accum;
  rp.dq = dq.data_ptr();
  strides3(rp.dq_stride, dq);
  rp.batch = p.batch;
  rp.heads = p.q_heads;
  rp.q_len = p.q_len;
  rp.acc_rows = p.n_q_blocks * pl.spec.block_m;
  rp.d_qk = static_cast<int>(s.head_dim_qk);
  rp.d_v = static_cast<int>(s.head_dim_v);
  rp.scale = p.scale;
  const bool bf16 = q.scalar_type() == at::kBFloat16;
  // A row pass over every query row, p.lanes lanes per row (for rows of `dim` values).
  auto row_pass = [&](codegen::RowPass pass, int dim) {
    rp.lanes = codegen::row_pass_lanes(dim);
    const int64_t rows = s.batch * s.q_heads * s.q_len, per_cta = codegen::kRowPassThreads / rp.lanes;
    void* row_args[] = {&rp};
    launch(get_row_pass(pass, bf16, pl.spec.arch),
           {static_cast<unsigned>((rows + per_cta - 1) / per_cta), 1, 1}, codegen::kRowPassThreads, 0,
           q, row_args);
  };
  row_pass(codegen::RowPass::Prep, rp.d_v);
  jit::KernelPtr kernel = get_kernel(*variant, pl.spec);
  VariantArgs va = variant_args(buffers, grads);
  void* args[] = {&p, &va};
  launch(kernel, {static_cast<unsigned>(p.n_kv_blocks),
                  static_cast<unsigned>(s.kv_heads),
                  static_cast<unsigned>(s.batch)},
         pl.spec.threads(), codegen::smem_bytes(pl.spec), q, args);
  row_pass(codegen::RowPass::Dq, rp.d_qk);

  std::vector<at::Tensor> dbuf(buffers.size());
  for (size_t i = 0; i < buffers.size(); ++i)
    dbuf[i] = grads[i].defined() ? grads[i].to(buffers[i].scalar_type())
                                 : at::empty({0}, buffers[i].options());
  return {dq, dk, dv, dbuf};
}

}  // namespace

std::string backend_for(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const std::vector<at::Tensor>& buffers, const std::string& key) {
  auto variant = get_variant(key);
  const Shapes s = check_inputs(q, k, v, buffers, *variant);
  if (!q.is_cuda()) return "reference: tensors on " + device_str(q);
  Plan pl = plan(Kind::Forward, *variant, q, s, buffers);
  if (!pl.ok) return "reference: " + pl.reason;
  const std::string fwd = pl.spec.family == codegen::Family::Sm90 ? "sm90" : "sm80";
  Plan pb = plan(Kind::Backward, *variant, q, s, buffers);
  if (!pb.ok) return fwd + " (backward on the reference: " + pb.reason + ")";
  return fwd;
}

}  // namespace ae::torch_ops

TORCH_LIBRARY_IMPL(attention_engine, CUDA, m) {
  m.impl("attention", &ae::torch_ops::cuda_forward);
  m.impl("attention_backward", &ae::torch_ops::cuda_backward);
}
