#include "torch/varlen.h"

#include <limits>

#include "torch/messages.h"

namespace ae::torch_ops {
namespace {

// Per token of a packed tensor of `total` rows: its row in the padded [n * width] layout
// (sequence i's token j at i * width + j). No host read: repeat_interleave is told its size.
at::Tensor padded_rows(const at::Tensor& cu, int64_t total, int64_t width) {
  const at::Tensor c = cu.to(at::kLong);
  const int64_t n = c.size(0) - 1;
  const at::Tensor lengths = c.slice(0, 1) - c.slice(0, 0, n);
  const at::Tensor seq = at::repeat_interleave(at::arange(n, c.options()), lengths, 0, total);
  return seq * width + at::arange(total, c.options()) - c.index_select(0, seq);
}

}  // namespace

Shapes check_varlen_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const std::vector<at::Tensor>& buffers, const ir::Variant& variant,
                           const at::Tensor& cu_q, const at::Tensor& cu_k, int64_t max_q,
                           int64_t max_k) {
  AE_CHECK(VALUE, q.dim() == 3 && k.dim() == 3 && v.dim() == 3,
           "varlen attention: q must be [total_q, Hq, D] and k, v [total_k, Hkv, D]; got q {}, "
           "k {}, v {}", shape_str(q), shape_str(k), shape_str(v));
  for (const at::Tensor* c : {&cu_q, &cu_k}) {
    AE_CHECK(TYPE, c->scalar_type() == at::kInt,
             "varlen attention: cu_seqlens must be int32; got {}", dtype_str(*c));
    AE_CHECK(VALUE, c->dim() == 1 && c->size(0) >= 1 && c->device() == q.device(),
             "varlen attention: cu_seqlens must be 1-D with n + 1 >= 1 entries on {}; got {} on {}",
             device_str(q), shape_str(*c), device_str(*c));
  }
  AE_CHECK(VALUE, cu_q.size(0) == cu_k.size(0),
           "varlen attention: cu_seqlens_q and cu_seqlens_k must have as many entries; got {} and {}",
           cu_q.size(0), cu_k.size(0));
  AE_CHECK(VALUE, max_q >= 0 && max_k >= 0,
           "varlen attention: max_seqlen_q and max_seqlen_k must be >= 0; got {} and {}", max_q,
           max_k);
  AE_CHECK(VALUE, variant.without_kv_lengths != nullptr,
           "varlen attention: the variant's mask must bound the keys by the sequences' lengths "
           "(kv_idx < lengths[b] and-ed into it, with lengths the differences of cu_seqlens_k), "
           "as attention_engine's varlen() writes it");
  const int64_t n = cu_q.size(0) - 1;
  // Zero-stride views with the dense problem's shape (no memory): check_inputs does the rest.
  auto dense = [&](const at::Tensor& x, int64_t width) {
    return x.as_strided({n, x.size(1), width, x.size(2)}, {0, 0, 0, 1});
  };
  return check_inputs(dense(q, max_q), dense(k, max_k), dense(v, max_k), buffers, variant);
}

at::Tensor dense_from_varlen(const at::Tensor& x, const at::Tensor& cu, int64_t width) {
  const int64_t n = cu.size(0) - 1, total = x.size(0);
  const at::Tensor rows = padded_rows(cu, total, width);
  at::Tensor padded = at::zeros({n * width, x.size(1), x.size(2)}, x.options());
  padded.index_copy_(0, rows, x);
  return padded.view({n, width, x.size(1), x.size(2)}).transpose(1, 2);
}

at::Tensor tokens_from_dense(const at::Tensor& x, const at::Tensor& cu, int64_t total) {
  const int64_t n = x.size(0), h = x.size(1), width = x.size(2);
  return x.transpose(1, 2)
      .reshape({n * width, h, x.size(3)})
      .index_select(0, padded_rows(cu, total, width))
      .contiguous();
}

std::tuple<at::Tensor, at::Tensor> varlen_from_dense(const at::Tensor& out, const at::Tensor& lse,
                                                     const at::Tensor& cu, int64_t total) {
  return {tokens_from_dense(out, cu, total),
          tokens_from_dense(lse.unsqueeze(-1), cu, total).squeeze(-1).t().contiguous()};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> varlen_backward_padded(
    DenseBackward backward, const at::Tensor& dout, const std::optional<at::Tensor>& dlse,
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const std::vector<at::Tensor>& buffers, const std::string& variant,
    double scale, const c10::List<bool>& buffer_grads, const at::Tensor& cu_q,
    const at::Tensor& cu_k, int64_t max_q, int64_t max_k) {
  // [Hq, total] -> [n, Hq, max_q]; past each sequence's rows `fill`: the lse an empty row's
  // (-inf: the kernels' P is then exactly 0 there, whatever its scores), dlse 0
  auto stats = [&](const at::Tensor& x, double fill) {
    const at::Tensor rows = x.t().unsqueeze(-1);
    const at::Tensor real = dense_from_varlen(at::ones_like(rows, at::kBool), cu_q, max_q);
    return dense_from_varlen(rows, cu_q, max_q).masked_fill(real.logical_not(), fill).squeeze(-1);
  };
  std::optional<at::Tensor> dlse_d;
  if (dlse && dlse->defined()) dlse_d = stats(*dlse, 0.0);
  auto [dq, dk, dv, dbuf] = backward(
      dense_from_varlen(dout, cu_q, max_q), dlse_d, dense_from_varlen(q, cu_q, max_q),
      dense_from_varlen(k, cu_k, max_k), dense_from_varlen(v, cu_k, max_k),
      dense_from_varlen(out, cu_q, max_q), stats(lse, -std::numeric_limits<double>::infinity()),
      buffers, variant, scale, buffer_grads, false);
  return {tokens_from_dense(dq, cu_q, q.size(0)), tokens_from_dense(dk, cu_k, k.size(0)),
          tokens_from_dense(dv, cu_k, k.size(0)), dbuf};
}

}  // namespace ae::torch_ops
