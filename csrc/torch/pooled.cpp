#include "torch/pooled.h"

#include <cmath>
#include <cstdlib>
#include <limits>

#include "torch/messages.h"
#include "torch/reference.h"
#include "torch/reference_parts.h"

namespace ae::torch_ops {
namespace {

constexpr double kLog2e = 1.4426950408889634;
constexpr double kInf = std::numeric_limits<double>::infinity();

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// [B, H, rows, n_kv_blocks * block] -> [B, H, n_kv_blocks, rows]: each row's largest value per
// block of keys (the last block padded with -inf).
at::Tensor block_maxima(const at::Tensor& x, int64_t block) {
  const int64_t keys = x.size(3), nk = ceil_div(keys, block);
  const at::Tensor padded = keys == nk * block ? x : at::constant_pad_nd(x, {0, nk * block - keys}, -kInf);
  return padded.view({x.size(0), x.size(1), x.size(2), nk, block}).amax(-1).transpose(2, 3);
}

}  // namespace

Shapes check_pooled_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const std::vector<at::Tensor>& buffers, const ir::Variant& variant,
                           int64_t block) {
  const Shapes s = check_inputs(q, k, v, buffers, variant);
  AE_CHECK(VALUE, block >= 1, "the pooled map's block size must be positive, got {}", block);
  AE_CHECK(VALUE, variant.forward.normalize == ir::Normalize::Softmax,
           "the pooled attention map's forward takes softmax variants (this one normalizes with "
           "'{}'); attention_engine.seer.pooled_attention_map computes it for any",
           ir::normalize_name(variant.forward.normalize));
  return s;
}

at::Tensor pool_block_max(at::Tensor block_max2, const at::Tensor& lse, int64_t block) {
  const at::ScalarType dt = lse.scalar_type();
  // Rows that keep nothing: +inf, so that their probabilities are exp2(-inf) = 0.
  at::Tensor lse2 = lse.to(dt) * kLog2e;
  lse2 = at::where(at::isneginf(lse2), kInf, lse2);
  at::Tensor p = block_max2.to(dt);
  p.sub_(lse2.unsqueeze(2)).exp2_();  // [B, H, nk, Sq]: each row's largest probability per block
  const int64_t rows = p.size(3), nq = ceil_div(rows, block);
  if (rows != nq * block) p = at::constant_pad_nd(p, {0, nq * block - rows}, 0.0);
  at::Tensor pooled = p.view({p.size(0), p.size(1), p.size(2), nq, block}).amax(-1).transpose(2, 3);
  const double tiny = dt == at::kDouble ? std::numeric_limits<double>::min()
                                        : std::numeric_limits<float>::min();
  return (pooled / pooled.sum(-1, /*keepdim=*/true).clamp_min(tiny)).contiguous();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> reference_pooled(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::vector<at::Tensor>& buffers, const std::string& key, double scale, int64_t block,
    bool /*deterministic*/) {
  auto variant = get_variant(key);
  const Shapes s = check_pooled_inputs(q, k, v, buffers, *variant, block);
  auto [out, lse] = reference_forward(q, k, v, buffers, key, scale);
  // The block maxima of the modified scores, query rows in chunks of at most 2^28 scores.
  const at::ScalarType cdt = ref::compute_dtype(q);
  const at::Tensor kf = ref::expand_heads(k, s.group(), cdt);
  int64_t budget = int64_t(1) << 28;
  if (const char* e = std::getenv("AE_REFERENCE_MAX_SCORES"); e && std::atoll(e) > 0)
    budget = std::atoll(e);
  const int64_t step = std::max<int64_t>(1, budget / std::max<int64_t>(1, s.batch * s.q_heads * s.kv_len));
  std::vector<at::Tensor> parts;
  for (int64_t r = 0; r < s.q_len; r += step) {
    Shapes c = s;
    c.q_offset = r;
    c.q_len = std::min(step, s.q_len - r);
    ref::Scores sc = ref::compute_scores(variant->forward, q.narrow(2, r, c.q_len), kf, buffers, c,
                                         scale, cdt);
    const at::Tensor x = sc.keep.defined() ? at::where(sc.keep, sc.x, -kInf) : sc.x;
    parts.push_back(block_maxima(x, block) * kLog2e);
  }
  at::Tensor maxima = parts.empty() ? at::full({s.batch, s.q_heads, ceil_div(s.kv_len, block), 0},
                                               -kInf, q.options().dtype(cdt))
                                    : at::cat(parts, 3);
  return {out.contiguous(), lse.contiguous(), pool_block_max(maxima, lse, block)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pooled_meta(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::vector<at::Tensor>& buffers, const std::string& key, double /*scale*/,
    int64_t block, bool /*deterministic*/) {
  const Shapes s = check_pooled_inputs(q, k, v, buffers, *get_variant(key), block);
  const at::ScalarType st = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return {at::empty({s.batch, s.q_heads, s.q_len, s.head_dim_v}, q.options()),
          at::empty({s.batch, s.q_heads, s.q_len}, q.options().dtype(st)),
          at::empty({s.batch, s.q_heads, ceil_div(s.q_len, block), ceil_div(s.kv_len, block)},
                    q.options().dtype(st))};
}

}  // namespace ae::torch_ops
