#include "torch/reference.h"

#include <algorithm>
#include <limits>

#include "torch/checks.h"
#include "torch/graph_eval.h"
#include "torch/messages.h"
#include "torch/reference_parts.h"

namespace ae::torch_ops {
namespace ref {

at::ScalarType compute_dtype(const at::Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// K/V heads repeated for GQA: query head h reads kv head h / group.
at::Tensor expand_heads(const at::Tensor& t, int64_t group, at::ScalarType cdt) {
  at::Tensor x = t.to(cdt);
  return group == 1 ? x : x.repeat_interleave(group, 1);
}

// Sums a gradient over the query heads that share one kv head.
at::Tensor reduce_heads(const at::Tensor& t, const Shapes& s) {
  if (s.group() == 1) return t;
  return t.view({s.batch, s.kv_heads, s.group(), t.size(2), t.size(3)}).sum(2);
}

Scores compute_scores(const ir::Graph& g, const at::Tensor& q, const at::Tensor& kf,
                      const std::vector<at::Tensor>& buffers, const Shapes& s, double scale,
                      at::ScalarType cdt) {
  at::Tensor raw = at::matmul(q.to(cdt), kf.transpose(-1, -2)) * scale;
  EvalInputs in{raw, s.batch, s.q_heads, s.q_len, s.kv_len, buffers, cdt, {}, s.q_offset};
  Scores r;
  // A custom normalization's per-row outputs wait for the row statistic (custom_rows).
  r.values = eval_graph(g, in, [](const ir::Output& o) { return !is_row_output(o.name); });
  const int score = g.output("score"), mask = g.output("mask");
  r.x = score >= 0 ? at::broadcast_to(r.values[score], raw.sizes()) : raw;
  if (mask >= 0) r.keep = r.values[mask];
  return r;
}

// sum_n a[..., m, n] * b[..., n, d] over the positions where c[..., m, n] holds only; `a` is 0
// elsewhere. A plain matmul unless b has inf or nan in some row n: 0 * inf would make the
// whole output row nan, so such rows are summed apart, through the mask. Masked positions
// never contribute, whatever V (or K, or Q) holds there.
at::Tensor masked_matmul(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c) {
  if (!c.defined() || b.size(-2) == 0 || a.numel() == 0) return at::matmul(a, b);  // no sum
  const at::Tensor bad = at::logical_not(at::isfinite(b)).any(-1).reshape({-1, b.size(-2)}).any(0);
  if (!bad.any().item<bool>()) return at::matmul(a, b);
  const at::Tensor bad_n = bad.nonzero().squeeze(-1);
  const at::Tensor good_n = at::logical_not(bad).nonzero().squeeze(-1);
  at::Tensor out = at::matmul(a.index_select(-1, good_n), b.index_select(-2, good_n));
  const at::Tensor cb = at::broadcast_to(c, a.sizes());
  const int64_t per_n = std::max<int64_t>(1, out.numel());
  const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 24) / per_n);
  for (int64_t start = 0; start < bad_n.size(0); start += chunk) {
    const at::Tensor n = bad_n.slice(0, start, std::min(start + chunk, bad_n.size(0)));
    const at::Tensor terms = a.index_select(-1, n).unsqueeze(-1) *   // [..., M, k, 1]
                             b.index_select(-2, n).unsqueeze(-3);    // [..., 1, k, D]
    out = out + at::where(cb.index_select(-1, n).unsqueeze(-1), terms, 0.0).sum(-2);
  }
  return out;
}


std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> input_grads(
    const ir::Graph& g, const at::Tensor& ds, const at::Tensor& p, const at::Tensor& contrib,
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& kf,
    const at::Tensor& d_out, const Shapes& s, double scale, const std::vector<at::Tensor>& buffers,
    const c10::List<bool>& buffer_grads, const std::vector<LoadGradSource>& sources) {
  const at::ScalarType cdt = ds.scalar_type();
  const at::Tensor contrib_t = contrib.defined() ? contrib.transpose(-1, -2) : contrib;
  at::Tensor dq = masked_matmul(ds, kf, contrib) * scale;
  at::Tensor dk = reduce_heads(masked_matmul(ds.transpose(-1, -2), q.to(cdt), contrib_t) * scale, s);
  at::Tensor dv = reduce_heads(masked_matmul(p.transpose(-1, -2), d_out, contrib_t), s);

  std::vector<at::Tensor> dbuf(buffers.size());
  for (size_t i = 0; i < buffers.size(); ++i) {
    if (!buffer_grads.get(i)) {
      dbuf[i] = at::empty({0}, buffers[i].options());
      continue;
    }
    at::Tensor acc = at::zeros(buffers[i].sizes(), buffers[i].options().dtype(cdt));
    for (const LoadGradSource& src : sources) {
      for (const ir::Output& o : g.outputs) {
        if (o.name != src.name || g.nodes[o.load].index != static_cast<int>(i)) continue;
        const std::vector<at::Tensor>& values = *src.values;
        at::Tensor part = chain(src.coef, values[o.node]);
        const ir::Node& ld = g.nodes[o.load];
        if (ld.args.empty()) {
          acc += part.sum();
          continue;
        }
        // A load's indices may not vary along every dim the part has (a per-row finish reads
        // sink[h]): broadcast both to their common shape.
        std::vector<at::Tensor> shaped = {part};
        for (int a : ld.args) shaped.push_back(values[a]);
        shaped = at::broadcast_tensors(shaped);
        c10::List<std::optional<at::Tensor>> idx;
        for (size_t a = 1; a < shaped.size(); ++a) idx.push_back(shaped[a]);
        acc.index_put_(idx, shaped[0], /*accumulate=*/true);
      }
    }
    dbuf[i] = acc.to(buffers[i].scalar_type());
  }
  return {dq.to(q.scalar_type()), dk.to(k.scalar_type()), dv.to(v.scalar_type()), dbuf};
}

}  // namespace ref

namespace {

using namespace ref;

constexpr double kInf = std::numeric_limits<double>::infinity();

// Softmax probabilities and natural-log LSE; rows with nothing kept get P = 0, lse = -inf.
std::pair<at::Tensor, at::Tensor> softmax(const Scores& sc) {
  at::Tensor xm = sc.keep.defined() ? at::where(sc.keep, sc.x, -kInf) : sc.x;
  at::Tensor lse = at::logsumexp(xm, -1, /*keepdim=*/true);
  at::Tensor empty_row = at::isneginf(lse);
  at::Tensor p = at::where(empty_row, 0.0, at::exp(xm - at::where(empty_row, 0.0, lse)));
  return {p, lse.squeeze(-1)};
}

// normalize="none": P is the modified score itself, zero where masked.
at::Tensor unnormalized(const Scores& sc) {
  return sc.keep.defined() ? at::where(sc.keep, sc.x, 0.0) : sc.x;
}

// The positions that contribute to their row: mask_mod keeps them and, under softmax, the
// score is above -inf (P is 0 elsewhere). Undefined when every position does.
at::Tensor contributing(const Scores& sc, bool softmax) {
  if (!softmax) return sc.keep.defined() ? at::broadcast_to(sc.keep, sc.x.sizes()) : sc.keep;
  at::Tensor above = sc.x != -kInf;  // nan included: a nan score makes its row nan
  return sc.keep.defined() ? at::logical_and(above, sc.keep) : above;
}

}  // namespace

namespace {

// The forward of query rows [s.q_offset, s.q_offset + s.q_len) (q holds those rows).
std::tuple<at::Tensor, at::Tensor> forward_rows(const std::shared_ptr<const ir::Variant>& variant,
                                                const at::Tensor& q, const at::Tensor& k,
                                                const at::Tensor& v,
                                                const std::vector<at::Tensor>& buffers,
                                                const Shapes& s, double scale) {
  if (variant->forward.normalize == ir::Normalize::Custom)
    return custom_forward(*variant, q, k, v, buffers, s, scale);
  const at::ScalarType cdt = compute_dtype(q);
  Scores sc = compute_scores(variant->forward, q, expand_heads(k, s.group(), cdt), buffers, s,
                             scale, cdt);
  at::Tensor p, lse;
  const bool is_softmax = variant->forward.normalize == ir::Normalize::Softmax;
  if (is_softmax) {
    std::tie(p, lse) = softmax(sc);
  } else {
    p = unnormalized(sc);
    lse = at::zeros({s.batch, s.q_heads, s.q_len}, q.options().dtype(cdt));
  }
  at::Tensor out = masked_matmul(p, expand_heads(v, s.group(), cdt), contributing(sc, is_softmax));
  return {out.to(q.scalar_type()), lse.to(cdt)};
}

// The backward of query rows [s.q_offset, s.q_offset + s.q_len) (dout, q, out hold those rows;
// dk, dv and the captured tensors' gradients are these rows' parts).
std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> backward_rows(
    const std::shared_ptr<const ir::Variant>& variant, const at::Tensor& dout,
    const std::optional<at::Tensor>& dlse, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const std::vector<at::Tensor>& buffers, const Shapes& s, double scale,
    const c10::List<bool>& buffer_grads) {
  if (variant->forward.normalize == ir::Normalize::Custom)
    return custom_backward(*variant, dout, dlse, q, k, v, buffers, s, scale, buffer_grads);
  const at::ScalarType cdt = compute_dtype(q);
  const ir::Graph& g = variant->backward;
  const at::Tensor kf = expand_heads(k, s.group(), cdt), vf = expand_heads(v, s.group(), cdt);
  Scores sc = compute_scores(g, q, kf, buffers, s, scale, cdt);
  const at::Tensor d_out = dout.to(cdt);

  // dX: the gradient by the modified score x = score_mod(s). Positions that do not
  // contribute get none, also where V holds inf or nan (dP would be nan there).
  at::Tensor p, dx;
  const bool is_softmax = g.normalize == ir::Normalize::Softmax;
  const at::Tensor contrib = contributing(sc, is_softmax);
  at::Tensor dp = at::matmul(d_out, vf.transpose(-1, -2));
  if (contrib.defined()) dp = at::where(contrib, dp, 0.0);
  if (is_softmax) {
    p = softmax(sc).first;  // recomputed in the compute dtype rather than read from lse
    at::Tensor row = (p * dp).sum(-1, /*keepdim=*/true);  // = rowsum(dO * O)
    if (dlse && dlse->defined()) row = row - dlse->to(cdt).unsqueeze(-1);
    dx = p * (dp - row);
  } else {
    p = unnormalized(sc);
    dx = sc.keep.defined() ? at::where(sc.keep, dp, 0.0) : dp;
  }
  const at::Tensor ds = chain(dx, sc.values[g.output("d_score")]);
  return input_grads(g, ds, p, contrib, q, k, v, kf, d_out, s, scale, buffers, buffer_grads,
                     {{"d_load", &sc.values, dx}});
}


// Query rows per chunk: each chunk's score matrices hold at most this many elements (several
// such matrices are alive at once: at 16k tokens and 16 heads one whole matrix is 16 GiB in
// fp32). AE_REFERENCE_MAX_SCORES lowers it (tests).
int64_t chunk_rows(const Shapes& s) {
  int64_t budget = int64_t(1) << 28;
  if (const char* e = std::getenv("AE_REFERENCE_MAX_SCORES"); e && std::atoll(e) > 0)
    budget = std::atoll(e);
  const int64_t per_row = std::max<int64_t>(1, s.batch * s.q_heads * s.kv_len);
  return std::max<int64_t>(1, budget / per_row);
}

Shapes rows_of(const Shapes& s, int64_t start, int64_t n) {
  Shapes c = s;
  c.q_offset = start;
  c.q_len = n;
  return c;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> reference_forward(const at::Tensor& q, const at::Tensor& k,
                                                     const at::Tensor& v,
                                                     const std::vector<at::Tensor>& buffers,
                                                     const std::string& key, double scale) {
  auto variant = get_variant(key);
  const Shapes s = check_inputs(q, k, v, buffers, *variant);
  const int64_t step = chunk_rows(s);
  if (s.q_len <= step) return forward_rows(variant, q, k, v, buffers, s, scale);
  std::vector<at::Tensor> outs, stats;
  for (int64_t r = 0; r < s.q_len; r += step) {
    const int64_t n = std::min(step, s.q_len - r);
    auto [o, st] = forward_rows(variant, q.narrow(2, r, n), k, v, buffers, rows_of(s, r, n), scale);
    outs.push_back(o);
    stats.push_back(st);
  }
  return {at::cat(outs, 2), at::cat(stats, 2)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> reference_backward(
    const at::Tensor& dout, const std::optional<at::Tensor>& dlse, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& /*out*/,
    const at::Tensor& /*lse*/, const std::vector<at::Tensor>& buffers, const std::string& key,
    double scale, const c10::List<bool>& buffer_grads) {
  auto variant = get_variant(key);
  const Shapes s = check_inputs(q, k, v, buffers, *variant);
  AE_CHECK(VALUE, buffer_grads.size() == buffers.size(),
           "buffer_grads has {} entries for {} captured tensors", buffer_grads.size(),
           buffers.size());
  const int64_t step = chunk_rows(s);
  if (s.q_len <= step)
    return backward_rows(variant, dout, dlse, q, k, v, buffers, s, scale, buffer_grads);
  std::vector<at::Tensor> dqs;
  at::Tensor dk, dv;
  std::vector<at::Tensor> dbuf;
  for (int64_t r = 0; r < s.q_len; r += step) {
    const int64_t n = std::min(step, s.q_len - r);
    std::optional<at::Tensor> dlse_c;
    if (dlse && dlse->defined()) dlse_c = dlse->narrow(2, r, n);
    auto [dq_c, dk_c, dv_c, dbuf_c] =
        backward_rows(variant, dout.narrow(2, r, n), dlse_c, q.narrow(2, r, n), k, v, buffers,
                      rows_of(s, r, n), scale, buffer_grads);
    dqs.push_back(dq_c);
    // Sums in the compute dtype, cast once (fp16/bf16 gradients would round per chunk).
    const at::ScalarType cdt = compute_dtype(q);
    dk = dk.defined() ? dk + dk_c.to(cdt) : dk_c.to(cdt);
    dv = dv.defined() ? dv + dv_c.to(cdt) : dv_c.to(cdt);
    if (dbuf.empty()) {
      for (const at::Tensor& t : dbuf_c) dbuf.push_back(t.numel() ? t.to(cdt) : t);
    } else {
      for (size_t i = 0; i < dbuf.size(); ++i)
        if (dbuf_c[i].numel()) dbuf[i] = dbuf[i] + dbuf_c[i].to(cdt);
    }
  }
  for (size_t i = 0; i < dbuf.size(); ++i)
    if (dbuf[i].numel()) dbuf[i] = dbuf[i].to(buffers[i].scalar_type());
  return {at::cat(dqs, 2), dk.to(k.scalar_type()), dv.to(v.scalar_type()), dbuf};
}

}  // namespace ae::torch_ops
