// The torch custom ops. The reference executor is the CompositeExplicitAutograd kernel, so
// every device runs it until a backend registers a faster kernel for its dispatch key; the
// Meta kernels give shapes to torch.compile. Autograd is registered from Python
// (python/attention_engine/ops.py), which calls attention_backward.
//
// The layout contract every kernel keeps (torch.compile checks the real outputs against the
// Meta kernels' sizes and strides): every output is contiguous, whatever the inputs' strides
// (a permuted q from qkv(x).view(B, S, 3, H, D).permute(...) still gets a contiguous dq), and
// lse is float64 for float64 inputs, float32 otherwise.
#include <torch/library.h>

#include "torch/checks.h"
#include "torch/linear.h"
#include "torch/paged.h"
#include "torch/pooled.h"
#include "torch/reference.h"
#include "torch/varlen.h"

namespace ae::torch_ops {
namespace {

at::ScalarType lse_dtype(const at::Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

std::tuple<at::Tensor, at::Tensor> forward_meta(const at::Tensor& q, const at::Tensor& k,
                                                const at::Tensor& v,
                                                const std::vector<at::Tensor>& buffers,
                                                const std::string& variant, double scale,
                                                bool /*deterministic*/) {
  check_inputs(q, k, v, buffers, *get_variant(variant));
  at::Tensor out = at::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, q.options());
  at::Tensor lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(lse_dtype(q)));
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> backward_meta(
    const at::Tensor& dout, const std::optional<at::Tensor>& dlse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    const std::vector<at::Tensor>& buffers, const std::string& variant, double scale,
    const c10::List<bool>& buffer_grads, bool /*deterministic*/) {
  // at::empty, not empty_like: empty_like keeps a permuted input's layout.
  std::vector<at::Tensor> dbuf;
  for (size_t i = 0; i < buffers.size(); ++i)
    dbuf.push_back(i < buffer_grads.size() && buffer_grads.get(i)
                       ? at::empty(buffers[i].sizes(), buffers[i].options())
                       : at::empty({0}, buffers[i].options()));
  return {at::empty(q.sizes(), q.options()), at::empty(k.sizes(), k.options()),
          at::empty(v.sizes(), v.options()), dbuf};
}

// The reference executor under the layout contract above.
std::tuple<at::Tensor, at::Tensor> reference_forward_op(const at::Tensor& q, const at::Tensor& k,
                                                        const at::Tensor& v,
                                                        const std::vector<at::Tensor>& buffers,
                                                        const std::string& variant, double scale,
                                                        bool /*deterministic*/) {
  auto [out, lse] = reference_forward(q, k, v, buffers, variant, scale);
  return {out.contiguous(), lse.contiguous()};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> reference_backward_op(
    const at::Tensor& dout, const std::optional<at::Tensor>& dlse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    const std::vector<at::Tensor>& buffers, const std::string& variant, double scale,
    const c10::List<bool>& buffer_grads, bool /*deterministic*/) {
  auto [dq, dk, dv, dbuf] = reference_backward(dout, dlse, q, k, v, out, lse, buffers, variant,
                                               scale, buffer_grads);
  for (at::Tensor& t : dbuf) t = t.contiguous();
  return {dq.contiguous(), dk.contiguous(), dv.contiguous(), dbuf};
}

// attention_paged: K and V in pages; the reference runs them gathered into dense tensors.
std::tuple<at::Tensor, at::Tensor> paged_meta(const at::Tensor& q, const at::Tensor& k,
                                              const at::Tensor& v,
                                              const std::vector<at::Tensor>& buffers,
                                              const std::string& variant, double /*scale*/,
                                              const at::Tensor& table) {
  check_paged_inputs(q, k, v, buffers, *get_variant(variant), table);
  at::Tensor out = at::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, q.options());
  at::Tensor lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(lse_dtype(q)));
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor> paged_reference_op(const at::Tensor& q, const at::Tensor& k,
                                                      const at::Tensor& v,
                                                      const std::vector<at::Tensor>& buffers,
                                                      const std::string& variant, double scale,
                                                      const at::Tensor& table) {
  check_paged_inputs(q, k, v, buffers, *get_variant(variant), table);
  return reference_forward_op(q, dense_from_pages(k, table), dense_from_pages(v, table), buffers,
                              variant, scale, false);
}

// attention_varlen: packed sequences; the reference runs them padded into a dense batch (the
// variant's key bound masks the padding).
std::tuple<at::Tensor, at::Tensor> varlen_meta(const at::Tensor& q, const at::Tensor& k,
                                               const at::Tensor& v,
                                               const std::vector<at::Tensor>& buffers,
                                               const std::string& variant, double /*scale*/,
                                               const at::Tensor& cu_q, const at::Tensor& cu_k,
                                               int64_t max_q, int64_t max_k) {
  check_varlen_inputs(q, k, v, buffers, *get_variant(variant), cu_q, cu_k, max_q, max_k);
  at::Tensor out = at::empty({q.size(0), q.size(1), v.size(2)}, q.options());
  at::Tensor lse = at::empty({q.size(1), q.size(0)}, q.options().dtype(lse_dtype(q)));
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor> varlen_reference_op(const at::Tensor& q, const at::Tensor& k,
                                                       const at::Tensor& v,
                                                       const std::vector<at::Tensor>& buffers,
                                                       const std::string& variant, double scale,
                                                       const at::Tensor& cu_q, const at::Tensor& cu_k,
                                                       int64_t max_q, int64_t max_k) {
  check_varlen_inputs(q, k, v, buffers, *get_variant(variant), cu_q, cu_k, max_q, max_k);
  auto [out, lse] = reference_forward(dense_from_varlen(q, cu_q, max_q), dense_from_varlen(k, cu_k, max_k),
                                      dense_from_varlen(v, cu_k, max_k), buffers, variant, scale);
  return varlen_from_dense(out, lse, cu_q, q.size(0));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> varlen_backward_meta(
    const at::Tensor& dout, const std::optional<at::Tensor>& dlse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    const std::vector<at::Tensor>& buffers, const std::string& variant, double scale,
    const c10::List<bool>& buffer_grads, const at::Tensor& /*cu_q*/, const at::Tensor& /*cu_k*/,
    int64_t /*max_q*/, int64_t /*max_k*/) {
  return backward_meta(dout, dlse, q, k, v, out, lse, buffers, variant, scale, buffer_grads, false);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> varlen_backward_reference_op(
    const at::Tensor& dout, const std::optional<at::Tensor>& dlse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    const std::vector<at::Tensor>& buffers, const std::string& variant, double scale,
    const c10::List<bool>& buffer_grads, const at::Tensor& cu_q, const at::Tensor& cu_k,
    int64_t max_q, int64_t max_k) {
  check_varlen_inputs(q, k, v, buffers, *get_variant(variant), cu_q, cu_k, max_q, max_k);
  return varlen_backward_padded(&reference_backward_op, dout, dlse, q, k, v, out, lse, buffers,
                                variant, scale, buffer_grads, cu_q, cu_k, max_q, max_k);
}

}  // namespace
}  // namespace ae::torch_ops

// attention / attention_backward: the engine's op (fused kernels where a backend has one).
// attention_reference / attention_reference_backward: always the reference executor, for
// tests and as the oracle on any device. deterministic: the backward's gradients the same bit
// for bit run to run (the forward takes it for autograd to hand to its backward; the
// reference executor is deterministic anyway).
#define AE_FWD_SCHEMA \
  "(Tensor q, Tensor k, Tensor v, Tensor[] buffers, str variant, float scale, "  \
  "bool deterministic=False) -> (Tensor out, Tensor lse)"
#define AE_BWD_SCHEMA                                                                      \
  "(Tensor dout, Tensor? dlse, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "    \
  "Tensor[] buffers, str variant, float scale, bool[] buffer_grads, "                     \
  "bool deterministic=False) -> (Tensor dq, Tensor dk, Tensor dv, Tensor[] dbuffers)"

// attention_paged: the forward against a paged KV cache, k / v [num_pages, Hkv, page_size, D]
// and the int32 page table [B, max_pages] (batch b's key r: row r % page_size of page
// table[b, r / page_size]); no autograd (the inference entry point gathers the pages where
// gradients are wanted).
#define AE_PAGED_SCHEMA \
  "(Tensor q, Tensor k, Tensor v, Tensor[] buffers, str variant, float scale, " \
  "Tensor block_table) -> (Tensor out, Tensor lse)"

// attention_varlen: packed sequences (FlashAttention's varlen layout), q [total_q, Hq, D],
// k / v [total_k, Hkv, D], sequence i's tokens cu_seqlens[i] .. cu_seqlens[i + 1] (int32, on
// q's device); out [total_q, Hq, Dv], lse [Hq, total_q]. The variant's mask must bound the keys
// by the sequences' lengths (csrc/torch/varlen.h). Its backward, attention_varlen_backward,
// returns dq, dk, dv in token order (autograd: python/attention_engine/inference.py).
#define AE_VARLEN_SCHEMA \
  "(Tensor q, Tensor k, Tensor v, Tensor[] buffers, str variant, float scale, "        \
  "Tensor cu_seqlens_q, Tensor cu_seqlens_k, int max_seqlen_q, int max_seqlen_k) -> "  \
  "(Tensor out, Tensor lse)"
#define AE_VARLEN_BWD_SCHEMA                                                                \
  "(Tensor dout, Tensor? dlse, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "     \
  "Tensor[] buffers, str variant, float scale, bool[] buffer_grads, Tensor cu_seqlens_q, " \
  "Tensor cu_seqlens_k, int max_seqlen_q, int max_seqlen_k) -> "                           \
  "(Tensor dq, Tensor dk, Tensor dv, Tensor[] dbuffers)"

// attention_pooled: the gate-training forward (torch/pooled.h): out and lse as attention's, and
// the block-pooled attention map [B, Hq, ceil(Sq / block), ceil(Skv / block)] (float32; float64
// for float64 inputs). Softmax variants. Autograd: out and lse as attention's (the map has no
// gradient; python/attention_engine/ops.py).
#define AE_POOLED_SCHEMA \
  "(Tensor q, Tensor k, Tensor v, Tensor[] buffers, str variant, float scale, int block, " \
  "bool deterministic=False) -> " \
  "(Tensor out, Tensor lse, Tensor pooled)"

// Linear attention (torch/linear.h): linear_forward, the chunked forward on feature-mapped
// inputs (autograd: python/attention_engine/linear.py); linear_step, one token against a state
// updated in place (inference).
#define AE_LINEAR_SCHEMA \
  "(Tensor q, Tensor k, Tensor v, Tensor a, Tensor? state0, float scale, bool output_state, " \
  "int chunk=64, Tensor? cu_seqlens=None) -> (Tensor o, Tensor state)"
#define AE_LINEAR_BWD_SCHEMA \
  "(Tensor q, Tensor k, Tensor v, Tensor a, Tensor? state0, Tensor dout, Tensor? dstate, " \
  "float scale, bool want_dstate0, Tensor? cu_seqlens=None) -> " \
  "(Tensor dq, Tensor dk, Tensor dv, Tensor da, Tensor dstate0)"
#define AE_LINEAR_STEP_SCHEMA \
  "(Tensor q, Tensor k, Tensor v, Tensor a, Tensor(s!) state, float scale) -> Tensor"

TORCH_LIBRARY(attention_engine, m) {
  m.def("attention_pooled" AE_POOLED_SCHEMA);
  m.def("linear_forward" AE_LINEAR_SCHEMA);
  m.def("linear_step" AE_LINEAR_STEP_SCHEMA);
  m.def("linear_backward" AE_LINEAR_BWD_SCHEMA);
  m.def("attention_varlen" AE_VARLEN_SCHEMA);
  m.def("attention_varlen_backward" AE_VARLEN_BWD_SCHEMA);
  m.def("attention_paged" AE_PAGED_SCHEMA);
  m.def("attention" AE_FWD_SCHEMA);
  m.def("attention_backward" AE_BWD_SCHEMA);
  m.def("attention_reference" AE_FWD_SCHEMA);
  m.def("attention_reference_backward" AE_BWD_SCHEMA);
}

TORCH_LIBRARY_IMPL(attention_engine, CompositeExplicitAutograd, m) {
  m.impl("attention", &ae::torch_ops::reference_forward_op);
  m.impl("attention_backward", &ae::torch_ops::reference_backward_op);
  m.impl("attention_reference", &ae::torch_ops::reference_forward_op);
  m.impl("attention_reference_backward", &ae::torch_ops::reference_backward_op);
  m.impl("attention_paged", &ae::torch_ops::paged_reference_op);
  m.impl("attention_varlen", &ae::torch_ops::varlen_reference_op);
  m.impl("attention_varlen_backward", &ae::torch_ops::varlen_backward_reference_op);
  m.impl("attention_pooled", &ae::torch_ops::reference_pooled);
  m.impl("linear_forward", &ae::torch_ops::linear_forward_reference);
  m.impl("linear_step", &ae::torch_ops::linear_step_reference);
}

TORCH_LIBRARY_IMPL(attention_engine, Meta, m) {
  m.impl("attention_paged", &ae::torch_ops::paged_meta);
  m.impl("attention_pooled", &ae::torch_ops::pooled_meta);
  m.impl("linear_forward", &ae::torch_ops::linear_forward_meta);
  m.impl("linear_step", &ae::torch_ops::linear_step_meta);
  m.impl("linear_backward", &ae::torch_ops::linear_backward_meta);
  m.impl("attention_varlen", &ae::torch_ops::varlen_meta);
  m.impl("attention_varlen_backward", &ae::torch_ops::varlen_backward_meta);
  m.impl("attention", &ae::torch_ops::forward_meta);
  m.impl("attention_backward", &ae::torch_ops::backward_meta);
  m.impl("attention_reference", &ae::torch_ops::forward_meta);
  m.impl("attention_reference_backward", &ae::torch_ops::backward_meta);
}

TORCH_LIBRARY_IMPL(attention_engine, CUDA, m) {
  m.impl("linear_forward", &ae::torch_ops::linear_forward_cuda);
  m.impl("linear_step", &ae::torch_ops::linear_step_cuda);
  m.impl("linear_backward", &ae::torch_ops::linear_backward_cuda);
}
