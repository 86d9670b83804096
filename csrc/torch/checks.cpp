#include "torch/checks.h"

#include <c10/util/Exception.h>

namespace ae::torch_ops {

std::shared_ptr<const ir::Variant> get_variant(const std::string& key) {
  auto v = ir::find_variant(key);
  TORCH_CHECK_VALUE(v != nullptr, "attention_engine: unknown variant '", key,
                    "': build it with attention_engine.compile(...) in this process first");
  return v;
}

Shapes check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const std::vector<at::Tensor>& buffers, const ir::Variant& variant) {
  TORCH_CHECK_VALUE(q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
                    "attention_engine: q, k, v must be 4-D [batch, heads, seq_len, head_dim]; got "
                    "q ", q.sizes(), ", k ", k.sizes(), ", v ", v.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(q.scalar_type()),
                   "attention_engine: q, k, v must be floating point; got ", q.scalar_type());
  TORCH_CHECK_TYPE(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(),
                   "attention_engine: q, k, v must have the same dtype; got q ", q.scalar_type(),
                   ", k ", k.scalar_type(), ", v ", v.scalar_type());
  TORCH_CHECK_VALUE(q.device() == k.device() && q.device() == v.device(),
                    "attention_engine: q, k, v must be on the same device; got q on ", q.device(),
                    ", k on ", k.device(), ", v on ", v.device());
  Shapes s{q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3), v.size(3)};
  TORCH_CHECK_VALUE(k.size(0) == s.batch && v.size(0) == s.batch,
                    "attention_engine: q, k, v must have the same batch size; got q ", q.sizes(),
                    ", k ", k.sizes(), ", v ", v.sizes());
  TORCH_CHECK_VALUE(v.size(1) == s.kv_heads,
                    "attention_engine: k and v must have the same number of heads; got k ",
                    k.sizes(), ", v ", v.sizes());
  TORCH_CHECK_VALUE(s.kv_heads > 0 && s.q_heads % s.kv_heads == 0,
                    "attention_engine: the query heads (", s.q_heads,
                    ") must be a multiple of the key/value heads (", s.kv_heads, ") for GQA");
  TORCH_CHECK_VALUE(v.size(2) == s.kv_len,
                    "attention_engine: k and v must have the same sequence length; got k ",
                    k.sizes(), ", v ", v.sizes());
  TORCH_CHECK_VALUE(k.size(3) == s.head_dim_qk,
                    "attention_engine: q and k must have the same head dim; got q ", q.sizes(),
                    ", k ", k.sizes());
  const auto& declared = variant.forward.buffers;
  TORCH_CHECK_VALUE(buffers.size() == declared.size(), "attention_engine: the variant reads ",
                    declared.size(), " captured tensor(s) but ", buffers.size(), " were passed");
  for (size_t i = 0; i < buffers.size(); ++i) {
    const at::Tensor& b = buffers[i];
    const ir::Buffer& d = declared[i];
    TORCH_CHECK_VALUE(b.device() == q.device(), "attention_engine: captured tensor '", d.name,
                      "' is on ", b.device(), " but q is on ", q.device(),
                      "; move it with .to(q.device)");
    TORCH_CHECK_VALUE(b.dim() == static_cast<int64_t>(d.shape.size()),
                      "attention_engine: captured tensor '", d.name, "' has rank ", b.dim(),
                      " but the variant was traced with rank ", d.shape.size());
    const bool is_float = at::isFloatingType(b.scalar_type());
    const bool is_bool = b.scalar_type() == at::kBool;
    const bool ok = d.type == ir::DType::Float ? is_float
                    : d.type == ir::DType::Bool ? is_bool
                                                : (!is_float && !is_bool);
    TORCH_CHECK_TYPE(ok, "attention_engine: captured tensor '", d.name, "' is ", b.scalar_type(),
                     " but the variant was traced with ", d.torch_dtype);
  }
  return s;
}

}  // namespace ae::torch_ops
