#include "torch/paged.h"

#include "torch/messages.h"

namespace ae::torch_ops {

at::Tensor dense_from_pages(const at::Tensor& pages, const at::Tensor& table) {
  const int64_t b = table.size(0), n = table.size(1), h = pages.size(1), ps = pages.size(2),
                d = pages.size(3);
  const at::Tensor idx = table.to(at::kLong).clamp(0, std::max<int64_t>(pages.size(0) - 1, 0));
  return pages.index_select(0, idx.flatten())
      .view({b, n, h, ps, d})
      .permute({0, 2, 1, 3, 4})
      .reshape({b, h, n * ps, d});
}

Shapes check_paged_inputs(const at::Tensor& q, const at::Tensor& k_pages, const at::Tensor& v_pages,
                          const std::vector<at::Tensor>& buffers, const ir::Variant& variant,
                          const at::Tensor& table) {
  AE_CHECK(VALUE, q.dim() == 4 && k_pages.dim() == 4 && v_pages.dim() == 4,
           "paged attention: q must be [B, Hq, Sq, D] and the pages [num_pages, Hkv, page_size, "
           "D]; got q {}, k {}, v {}", shape_str(q), shape_str(k_pages), shape_str(v_pages));
  AE_CHECK(VALUE, k_pages.size(0) == v_pages.size(0) && k_pages.size(1) == v_pages.size(1) &&
                      k_pages.size(2) == v_pages.size(2),
           "paged attention: k and v pages must agree in all but the head dim; got {} and {}",
           shape_str(k_pages), shape_str(v_pages));
  AE_CHECK(TYPE, table.scalar_type() == at::kInt,
           "paged attention: the page table must be int32; got {}", dtype_str(table));
  AE_CHECK(VALUE, table.dim() == 2 && table.size(0) == q.size(0) && table.device() == q.device(),
           "paged attention: the page table must be [B={}, max_pages] on {}; got {} on {}",
           q.size(0), device_str(q), shape_str(table), device_str(table));
  AE_CHECK(VALUE, k_pages.size(0) > 0 || table.size(1) == 0,
           "paged attention: the page table has {} columns but the cache has no pages",
           table.size(1));
  const int64_t cap = table.size(1) * k_pages.size(2);
  // Zero-stride views with the dense problem's shape (no memory): check_inputs does the rest.
  const at::Tensor k = k_pages.as_strided({q.size(0), k_pages.size(1), cap, k_pages.size(3)},
                                          {0, 0, 0, 1});
  const at::Tensor v = v_pages.as_strided({q.size(0), v_pages.size(1), cap, v_pages.size(3)},
                                          {0, 0, 0, 1});
  return check_inputs(q, k, v, buffers, variant);
}

}  // namespace ae::torch_ops
