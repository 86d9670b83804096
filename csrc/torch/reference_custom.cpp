// The reference executor for custom row normalizations (ir::Normalize::Custom):
//
//   linear:     out_i = c(L_i) sum_j f(x_ij) v_j,           L_i = sum_j g(x_ij)
//   log domain: out_i = exp(h(lse_i)) sum_j exp(u(x_ij)) v_j, lse_i = log sum_j exp(u(x_ij))
//
// over the positions j the mask keeps, with f / u the graph's "weight", g its "stat" (f when
// absent) and c / h its "finish" (1 / -lse when absent). A row that keeps nothing gives 0 and
// the statistic 0 (linear) or -inf (log domain). The backward is the exact derivative, from the
// graph's derivatives of weight, stat and finish:
//
//   linear:  dx_ij = c_i dP_ij f'_ij + (c'_i (dO_i . A_i) + dL_i) g'_ij,    A_i = sum_j f_ij v_j
//   log:     dx_ij = (p_ij dP_ij + (h'_i delta_i + dlse_i) r_ij) u'_ij,
//            p_ij = exp(u_ij + h_i), r_ij = exp(u_ij - lse_i), delta_i = dO_i . out_i
//
// (with detach_stats the terms through the statistic, c' / h' and dL / dlse, are left out).
#include <limits>

#include "ir/variant.h"
#include "torch/graph_eval.h"
#include "torch/messages.h"
#include "torch/reference_parts.h"

namespace ae::torch_ops {
namespace {

using namespace ref;

constexpr double kInf = std::numeric_limits<double>::infinity();

// The per-element and per-row quantities of one call, in the compute dtype.
struct Rows {
  Scores sc;
  at::Tensor contrib;  // bool [B,H,Sq,Skv]: the positions that add to their row
  at::Tensor empty;    // bool [B,H,Sq,1]: rows where none does
  at::Tensor w;        // linear: f where contrib, else 0; log: exp(u - m) where contrib, else 0
  at::Tensor stat;     // [B,H,Sq,1]: L, or lse
  at::Tensor factor;   // [B,H,Sq,1]: what sum_j w_ij v_j is multiplied by (c, or exp(m + h))
  at::Tensor g;        // linear: g where contrib, else 0
  at::Tensor m;        // log: the row max of u (0 for empty rows)
  std::vector<at::Tensor> row_values;  // the graph's per-row nodes, given the statistic
};

Rows custom_rows(const ir::Graph& g, const at::Tensor& q, const at::Tensor& kf,
                 const std::vector<at::Tensor>& buffers, const Shapes& s, double scale,
                 at::ScalarType cdt) {
  Rows r;
  r.sc = compute_scores(g, q, kf, buffers, s, scale, cdt);
  const at::Tensor& x = r.sc.x;
  auto full = [&](const at::Tensor& t) { return at::broadcast_to(t, x.sizes()); };
  const at::Tensor keep = r.sc.keep.defined() ? full(r.sc.keep)
                                              : at::ones(x.sizes(), x.options().dtype(at::kBool));
  const at::Tensor weight = full(r.sc.values[g.output("weight")]);
  if (g.log_domain) {
    const at::Tensor u = at::where(keep, weight, -kInf);
    r.contrib = u != -kInf;  // a weight of exp(-inf) adds nothing (nan stays: its row is nan)
    at::Tensor m = std::get<0>(u.max(-1, /*keepdim=*/true));
    r.m = at::where(at::isneginf(m), 0.0, m);
    r.w = at::where(r.contrib, at::exp(u - r.m), 0.0);
    r.stat = r.m + at::log(r.w.sum(-1, /*keepdim=*/true));  // -inf where nothing is kept
  } else {
    r.contrib = keep;
    r.w = at::where(keep, weight, 0.0);
    const int stat = g.output("stat");
    r.g = stat >= 0 ? at::where(keep, full(r.sc.values[stat]), 0.0) : r.w;
    r.stat = r.g.sum(-1, /*keepdim=*/true);
  }
  r.empty = at::logical_not(r.contrib.any(-1, /*keepdim=*/true));
  if (!g.log_domain) r.stat = at::where(r.empty, 0.0, r.stat);

  EvalInputs in{x, s.batch, s.q_heads, s.q_len, s.kv_len, buffers, cdt, r.stat, s.q_offset};
  r.row_values = eval_graph(g, in, [](const ir::Output& o) { return is_row_output(o.name); });
  const int finish = g.output("finish");
  auto rows = [&](const at::Tensor& t) { return at::broadcast_to(t, r.stat.sizes()); };
  if (g.log_domain) {
    const at::Tensor h = finish >= 0 ? rows(r.row_values[finish]) : -r.stat;
    r.factor = at::exp(r.m + h);
  } else {
    r.factor = finish >= 0 ? rows(r.row_values[finish]) : at::ones_like(r.stat);
  }
  return r;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> custom_forward(const ir::Variant& variant, const at::Tensor& q,
                                                  const at::Tensor& k, const at::Tensor& v,
                                                  const std::vector<at::Tensor>& buffers,
                                                  const Shapes& s, double scale) {
  const at::ScalarType cdt = compute_dtype(q);
  const Rows r = custom_rows(variant.forward, q, expand_heads(k, s.group(), cdt), buffers, s,
                             scale, cdt);
  at::Tensor out = masked_matmul(r.w, expand_heads(v, s.group(), cdt), r.contrib) * r.factor;
  out = at::where(r.empty, 0.0, out);  // c(0) may be inf: a row with nothing is 0
  return {out.to(q.scalar_type()), r.stat.squeeze(-1).to(cdt)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> custom_backward(
    const ir::Variant& variant, const at::Tensor& dout, const std::optional<at::Tensor>& dstat,
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::vector<at::Tensor>& buffers, const Shapes& s, double scale,
    const c10::List<bool>& buffer_grads) {
  const ir::Graph& g = variant.backward;
  const at::ScalarType cdt = compute_dtype(q);
  const at::Tensor kf = expand_heads(k, s.group(), cdt), vf = expand_heads(v, s.group(), cdt);
  const Rows r = custom_rows(g, q, kf, buffers, s, scale, cdt);
  const std::vector<at::Tensor>& ev = r.sc.values;
  const at::Tensor d_out = dout.to(cdt);
  auto full = [&](const at::Tensor& t) { return at::broadcast_to(t, r.sc.x.sizes()); };
  auto rows = [&](const at::Tensor& t) { return at::broadcast_to(t, r.stat.sizes()); };
  // Only the rows' own values count: an empty row's factor may be inf.
  auto row_zero = [&](const at::Tensor& t) { return at::where(r.empty, 0.0, t); };

  at::Tensor dp = at::where(r.contrib, at::matmul(d_out, vf.transpose(-1, -2)), 0.0);
  const at::Tensor p = at::where(r.contrib, r.w * row_zero(r.factor), 0.0);  // the weights of V
  const bool through_stat = !g.detach_stats;
  at::Tensor d_stat_in = dstat && dstat->defined() && through_stat
                             ? dstat->to(cdt).unsqueeze(-1)
                             : at::zeros_like(r.stat);
  d_stat_in = row_zero(d_stat_in);
  const int d_finish = g.output("d_finish");
  at::Tensor coef_w, coef_stat, coef_finish;  // by the weight, the stat, the finish
  at::Tensor ds;
  if (g.log_domain) {
    // delta = dO . out = sum_j p dP; r = exp(u - lse) = w / sum w.
    const at::Tensor delta = (p * dp).sum(-1, /*keepdim=*/true);
    const at::Tensor w_sum = r.w.sum(-1, /*keepdim=*/true);
    const at::Tensor share = at::where(r.contrib, r.w / at::where(r.empty, 1.0, w_sum), 0.0);
    at::Tensor row = d_stat_in;
    if (through_stat) {
      const at::Tensor dh = d_finish >= 0 ? rows(r.row_values[d_finish]) : -at::ones_like(r.stat);
      row = row + chain(delta, dh);
    }
    coef_w = p * dp + share * row;
    coef_finish = delta;
    ds = chain(coef_w, full(ev[g.output("d_weight")]));
  } else {
    const at::Tensor a = masked_matmul(r.w, vf, r.contrib);  // sum_j f v, before the factor
    const at::Tensor w_a = row_zero((d_out * a).sum(-1, /*keepdim=*/true));
    at::Tensor row = d_stat_in;
    if (through_stat && d_finish >= 0) row = row + chain(w_a, rows(r.row_values[d_finish]));
    coef_w = at::where(r.contrib, row_zero(r.factor) * dp, 0.0);
    coef_stat = at::where(r.contrib, full(row), 0.0);
    coef_finish = w_a;
    const int d_stat = g.output("d_stat");
    const at::Tensor dg = full(ev[d_stat >= 0 ? d_stat : g.output("d_weight")]);
    ds = chain(coef_w, full(ev[g.output("d_weight")])) + chain(coef_stat, dg);
  }
  ds = at::where(r.contrib, ds, 0.0);
  std::vector<LoadGradSource> sources = {{"d_load_weight", &ev, coef_w},
                                         {"d_load_finish", &r.row_values, coef_finish}};
  if (!g.log_domain)
    sources.push_back({g.output("stat") >= 0 ? "d_load_stat" : "d_load_weight", &ev, coef_stat});
  return input_grads(g, ds, p, r.contrib, q, k, v, kf, d_out, s, scale, buffers, buffer_grads,
                     sources);
}

}  // namespace ae::torch_ops
