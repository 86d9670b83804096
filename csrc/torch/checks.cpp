#include "torch/checks.h"

#include <c10/util/Exception.h>

#include "torch/messages.h"

namespace ae::torch_ops {

std::shared_ptr<const ir::Variant> get_variant(const std::string& key) {
  auto v = ir::find_variant(key);
  AE_CHECK(VALUE, v != nullptr, "unknown variant '{}': build it with attention_engine.compile(...)"
           " in this process first", key);
  return v;
}

bool v_shares_k(const at::Tensor& k, const at::Tensor& v) {
  if (k.dim() != 4 || v.dim() != 4 || v.data_ptr() != k.data_ptr() || v.size(3) > k.size(3) ||
      k.stride(3) != 1 || v.stride(3) != 1)
    return false;
  for (int d = 0; d < 3; ++d)
    if (k.size(d) != v.size(d) || (k.size(d) > 1 && k.stride(d) != v.stride(d))) return false;
  return true;
}

Shapes check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const std::vector<at::Tensor>& buffers, const ir::Variant& variant) {
  auto all3 = [&] {
    return fmt::format("q {}, k {}, v {}", shape_str(q), shape_str(k), shape_str(v));
  };
  AE_CHECK(VALUE, q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
           "q, k, v must be 4-D [batch, heads, seq_len, head_dim]; got {}", all3());
  AE_CHECK(TYPE, at::isFloatingType(q.scalar_type()),
           "q, k, v must be floating point; got {}", dtype_str(q));
  AE_CHECK(TYPE, q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(),
           "q, k, v must have the same dtype; got q {}, k {}, v {}", dtype_str(q), dtype_str(k),
           dtype_str(v));
  AE_CHECK(VALUE, q.device() == k.device() && q.device() == v.device(),
           "q, k, v must be on the same device; got q on {}, k on {}, v on {}", device_str(q),
           device_str(k), device_str(v));
  Shapes s{q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3), v.size(3)};
  AE_CHECK(VALUE, k.size(0) == s.batch && v.size(0) == s.batch,
           "q, k, v must have the same batch size; got {}", all3());
  AE_CHECK(VALUE, v.size(1) == s.kv_heads,
           "k and v must have the same number of heads; got {}", all3());
  AE_CHECK(VALUE, s.kv_heads > 0 && s.q_heads % s.kv_heads == 0,
           "the query heads ({}) must be a multiple of the key/value heads ({}) for GQA",
           s.q_heads, s.kv_heads);
  AE_CHECK(VALUE, v.size(2) == s.kv_len,
           "k and v must have the same sequence length; got {}", all3());
  AE_CHECK(VALUE, k.size(3) == s.head_dim_qk, "q and k must have the same head dim; got {}",
           all3());
  const auto& declared = variant.forward.buffers;
  AE_CHECK(VALUE, buffers.size() == declared.size(),
           "the variant reads {} captured tensor(s) but {} were passed", declared.size(),
           buffers.size());
  for (size_t i = 0; i < buffers.size(); ++i) {
    const at::Tensor& b = buffers[i];
    const ir::Buffer& d = declared[i];
    AE_CHECK(VALUE, b.device() == q.device(),
             "captured tensor '{}' is on {} but q is on {}; move it with .to(q.device)", d.name,
             device_str(b), device_str(q));
    AE_CHECK(VALUE, b.dim() == static_cast<int64_t>(d.shape.size()),
             "captured tensor '{}' has rank {} but the variant was traced with rank {}", d.name,
             b.dim(), d.shape.size());
    const bool is_float = at::isFloatingType(b.scalar_type());
    const bool is_bool = b.scalar_type() == at::kBool;
    const bool ok = d.type == ir::DType::Float ? is_float
                    : d.type == ir::DType::Bool ? is_bool
                                                : (!is_float && !is_bool);
    AE_CHECK(TYPE, ok, "captured tensor '{}' is {} but the variant was traced with {}", d.name,
             dtype_str(b), d.torch_dtype);
  }
  return s;
}

}  // namespace ae::torch_ops
