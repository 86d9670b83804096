#include "torch/runner_inputs.h"

#include <c10/core/impl/DeviceGuardImplInterface.h>

namespace ae::torch_ops {
namespace {

// torch's names, as codegen's loads know them ("" for dtypes without one).
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

}  // namespace

plan::ElemType elem_type(at::ScalarType t) {
  switch (t) {
    case at::kBFloat16: return plan::ElemType::BFloat16;
    case at::kHalf: return plan::ElemType::Float16;
    case at::kFloat: return plan::ElemType::Float32;
    case at::kDouble: return plan::ElemType::Float64;
    default: return plan::ElemType::Other;
  }
}

plan::Problem problem_of(plan::OpKind kind, const at::Tensor& q, const Shapes& s,
                         const std::vector<at::Tensor>& buffers, double scale,
                         const std::vector<bool>& wants_grad) {
  plan::Problem p;
  p.kind = kind;
  p.dtype = elem_type(q.scalar_type());
  p.batch = s.batch;
  p.q_heads = s.q_heads;
  p.kv_heads = s.kv_heads;
  p.q_len = s.q_len;
  p.kv_len = s.kv_len;
  p.d_qk = s.head_dim_qk;
  p.d_v = s.head_dim_v;
  p.v_in_k = s.v_in_k;
  p.scale = scale;
  for (size_t i = 0; i < buffers.size(); ++i) {
    const char* name = dtype_name(buffers[i].scalar_type());
    p.captured.push_back({*name ? name : c10::toString(buffers[i].scalar_type()),
                          static_cast<int>(buffers[i].dim()),
                          i < wants_grad.size() && wants_grad[i],
                          static_cast<int64_t>(buffers[i].numel())});
  }
  return p;
}

runner::TensorRef ref(const at::Tensor& t) {
  runner::TensorRef r;
  if (!t.defined()) return r;
  r.data = t.data_ptr();
  r.rank = static_cast<int>(t.dim());
  for (int d = 0; d < r.rank && d < 4; ++d) {
    r.size[d] = t.size(d);
    r.stride[d] = t.stride(d);
  }
  r.dtype = elem_type(t.scalar_type());
  r.elem_size = static_cast<int>(t.element_size());
  return r;
}

at::Tensor kernel_ready(const at::Tensor& t) {
  return runner::unfit_for_kernels(ref(t)).empty() ? t : t.contiguous();
}

runner::Bindings bind_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const std::vector<at::Tensor>& buffers,
                             const std::vector<at::Tensor>& grads) {
  runner::Bindings b;
  b.q = ref(q);
  b.k = ref(k);
  b.v = ref(v);
  for (size_t i = 0; i < buffers.size(); ++i)
    b.captured.push_back({ref(buffers[i]), i < grads.size() ? ref(grads[i]) : runner::TensorRef{}});
  b.device = q.device().index();
  b.stream = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->getStream(q.device()).native_handle();
  return b;
}

}  // namespace ae::torch_ops
