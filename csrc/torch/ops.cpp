// The torch custom ops. The reference executor is the CompositeExplicitAutograd kernel, so
// every device runs it until a backend registers a faster kernel for its dispatch key; the
// Meta kernels give shapes to torch.compile. Autograd is registered from Python
// (python/attention_engine/ops.py), which calls attention_backward.
#include <torch/library.h>

#include "torch/checks.h"
#include "torch/reference.h"

namespace ae::torch_ops {
namespace {

std::tuple<at::Tensor, at::Tensor> forward_meta(const at::Tensor& q, const at::Tensor& k,
                                                const at::Tensor& v,
                                                const std::vector<at::Tensor>& buffers,
                                                const std::string& variant, double scale) {
  check_inputs(q, k, v, buffers, *get_variant(variant));
  at::Tensor out = at::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, q.options());
  at::Tensor lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(at::kFloat));
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> backward_meta(
    const at::Tensor& dout, const std::optional<at::Tensor>& dlse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    const std::vector<at::Tensor>& buffers, const std::string& variant, double scale,
    const c10::List<bool>& buffer_grads) {
  std::vector<at::Tensor> dbuf;
  for (size_t i = 0; i < buffers.size(); ++i)
    dbuf.push_back(i < buffer_grads.size() && buffer_grads.get(i) ? at::empty_like(buffers[i])
                                                             : at::empty({0}, buffers[i].options()));
  return {at::empty_like(q), at::empty_like(k), at::empty_like(v), dbuf};
}

}  // namespace
}  // namespace ae::torch_ops

// attention / attention_backward: the engine's op (fused kernels where a backend has one).
// attention_reference / attention_reference_backward: always the reference executor, for
// tests and as the oracle on any device.
#define AE_FWD_SCHEMA \
  "(Tensor q, Tensor k, Tensor v, Tensor[] buffers, str variant, float scale)" \
  " -> (Tensor out, Tensor lse)"
#define AE_BWD_SCHEMA                                                                      \
  "(Tensor dout, Tensor? dlse, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "    \
  "Tensor[] buffers, str variant, float scale, bool[] buffer_grads)"                      \
  " -> (Tensor dq, Tensor dk, Tensor dv, Tensor[] dbuffers)"

TORCH_LIBRARY(attention_engine, m) {
  m.def("attention" AE_FWD_SCHEMA);
  m.def("attention_backward" AE_BWD_SCHEMA);
  m.def("attention_reference" AE_FWD_SCHEMA);
  m.def("attention_reference_backward" AE_BWD_SCHEMA);
}

TORCH_LIBRARY_IMPL(attention_engine, CompositeExplicitAutograd, m) {
  m.impl("attention", &ae::torch_ops::reference_forward);
  m.impl("attention_backward", &ae::torch_ops::reference_backward);
  m.impl("attention_reference", &ae::torch_ops::reference_forward);
  m.impl("attention_reference_backward", &ae::torch_ops::reference_backward);
}

TORCH_LIBRARY_IMPL(attention_engine, Meta, m) {
  m.impl("attention", &ae::torch_ops::forward_meta);
  m.impl("attention_backward", &ae::torch_ops::backward_meta);
  m.impl("attention_reference", &ae::torch_ops::forward_meta);
  m.impl("attention_reference_backward", &ae::torch_ops::backward_meta);
}
