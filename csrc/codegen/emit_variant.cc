#include "codegen/emit_variant.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <stdexcept>

#include "codegen/mask_split.h"
#include "codegen/score_scales.h"
#include "ir/error.h"

namespace ae::codegen {
namespace {

using ir::DType;
using ir::Graph;
using ir::Node;
using ir::Op;

const char* ctype(DType t) {
  switch (t) {
    case DType::Float: return "float";
    case DType::Int: return "int";
    case DType::Bool: return "bool";
  }
  return "?";
}

std::string name(int id) { return fmt::format("n{}", id); }

// The value of node `id` converted to type `to`.
std::string conv(const Graph& g, int id, DType to) {
  const DType from = g.nodes[id].type;
  const std::string x = name(id);
  if (from == to) return x;
  if (to == DType::Float) return from == DType::Bool ? fmt::format("({} ? 1.f : 0.f)", x)
                                                     : fmt::format("static_cast<float>({})", x);
  if (to == DType::Int) return fmt::format("static_cast<int>({})", x);
  return from == DType::Float ? fmt::format("({} != 0.f)", x) : fmt::format("({} != 0)", x);
}

std::string float_literal(double v) {
  const float f = static_cast<float>(v);
  if (std::isnan(f)) return "__int_as_float(0x7fffffff)";
  if (std::isinf(f)) return f > 0 ? "__int_as_float(0x7f800000)" : "__int_as_float(0xff800000)";
  return fmt::format("{:.9e}f", f);
}

}  // namespace

bool has_kernel_load(const std::string& dtype) {
  for (const char* d : {"float32", "float64", "bfloat16", "float16", "int64", "int32", "int16",
                        "int8", "uint8", "bool"})
    if (dtype == d) return true;
  return false;
}

namespace {

// Set by emit_variant while it writes a Variant whose loads may be plain ones (ae::ld's
// kPlain: a custom normalization's kernels without captured tensors' gradients).
thread_local bool t_plain_loads = false;
// And whether an integer pow takes the branch-free ae::fpow_i (custom normalizations' kernels
// with plain loads: their conservative tiles have the registers for it).
thread_local bool t_pow_i = false;

std::string load_expr(const Graph& g, const Node& n, const std::string& dtype) {
  std::string off = "0";
  if (!n.args.empty()) {
    std::string idx;
    for (size_t i = 0; i < n.args.size(); ++i)
      idx += fmt::format("{}static_cast<long long>({})", i ? ", " : "", name(n.args[i]));
    off = fmt::format("ae::offset<{}>(va.buf[{}], {{{}}})", n.args.size(), n.index, idx);
  }
  const std::string buf = fmt::format("va.buf[{}]", n.index);
  std::string raw;
  DType raw_type = DType::Int;
  if (dtype == "float32") raw = fmt::format("ae::ld<float{}>({}, {})", t_plain_loads ? ", true" : "", buf, off), raw_type = DType::Float;
  else if (dtype == "float64") raw = fmt::format("static_cast<float>(ae::ld<double{}>({}, {}))", t_plain_loads ? ", true" : "", buf, off), raw_type = DType::Float;
  else if (dtype == "bfloat16") raw = fmt::format("ae::ld_bf16({}, {})", buf, off), raw_type = DType::Float;
  else if (dtype == "float16") raw = fmt::format("ae::ld_f16({}, {})", buf, off), raw_type = DType::Float;
  else if (dtype == "int64") raw = fmt::format("static_cast<int>(ae::ld<long long{}>({}, {}))", t_plain_loads ? ", true" : "", buf, off);
  else if (dtype == "int32") raw = fmt::format("ae::ld<int{}>({}, {})", t_plain_loads ? ", true" : "", buf, off);
  else if (dtype == "int16") raw = fmt::format("static_cast<int>(ae::ld<short>({}, {}))", buf, off);
  else if (dtype == "int8") raw = fmt::format("static_cast<int>(ae::ld<signed char>({}, {}))", buf, off);
  else if (dtype == "uint8") raw = fmt::format("static_cast<int>(ae::ld<unsigned char>({}, {}))", buf, off);
  else if (dtype == "bool") raw = fmt::format("(ae::ld<unsigned char>({}, {}) != 0)", buf, off), raw_type = DType::Bool;
  else throw ir::GraphError(fmt::format("no kernel load for captured dtype {}", dtype));
  if (raw_type == n.type) return raw;
  if (n.type == DType::Float) return fmt::format("static_cast<float>({})", raw);
  if (n.type == DType::Int) return fmt::format("static_cast<int>({})", raw);
  return fmt::format("({} != 0)", raw);
}

std::string expr(const Graph& g, int id, const std::vector<std::string>& dtypes) {
  const Node& n = g.nodes[id];
  const DType t = n.type;
  const bool fl = t == DType::Float;
  auto a = [&](int i, DType to) { return conv(g, n.args[i], to); };
  auto x = [&](int i) { return name(n.args[i]); };
  auto fun = [&](const char* f) { return fmt::format("{}({})", f, a(0, DType::Float)); };
  auto operand = [&]() {  // comparisons compare in the promoted type (bool as int)
    DType p = std::max(g.nodes[n.args[0]].type, g.nodes[n.args[1]].type);
    return p == DType::Bool ? DType::Int : p;
  };
  auto cmp = [&](const char* o) {
    DType p = operand();
    return fmt::format("{} {} {}", a(0, p), o, a(1, p));
  };
  auto bin = [&](const char* o) { return fmt::format("{} {} {}", a(0, t), o, a(1, t)); };
  switch (n.op) {
    case Op::Param: {
      static const char* params[] = {"score", "b", "h", "q_idx", "kv_idx", "stat"};
      return params[n.index];
    }
    case Op::Const:
      if (t == DType::Float) return float_literal(n.fvalue);
      if (t == DType::Bool) return n.ivalue ? "true" : "false";
      return fmt::format("{}", n.ivalue);
    case Op::Load: return load_expr(g, n, dtypes.at(n.index));
    case Op::Cast: return a(0, t);
    case Op::Neg: return fmt::format("-{}", a(0, t));
    case Op::Not: return t == DType::Bool ? fmt::format("!{}", x(0)) : fmt::format("~{}", x(0));
    case Op::Abs: return fl ? fun("fabsf") : fmt::format("ae::iabs({})", a(0, t));
    case Op::Sign: return fl ? fun("ae::fsign") : fmt::format("ae::isign({})", a(0, t));
    case Op::Relu: return fl ? fmt::format("fmaxf({}, 0.f)", x(0)) : fmt::format("ae::imax({}, 0)", a(0, t));
    case Op::Exp: return fun("__expf");
    case Op::Exp2: return fun("exp2f");
    case Op::Log: return fun("__logf");
    case Op::Log2: return fun("__log2f");
    case Op::Tanh: return fun("ae::fast_tanh");
    case Op::Sigmoid: return fun("ae::fast_sigmoid");
    case Op::Sqrt: return fun("sqrtf");
    case Op::Rsqrt: return fun("rsqrtf");
    case Op::Sin: return fun("sinf");
    case Op::Cos: return fun("cosf");
    case Op::Floor: return fl ? fun("floorf") : a(0, t);
    case Op::Ceil: return fl ? fun("ceilf") : a(0, t);
    case Op::Trunc: return fl ? fun("truncf") : a(0, t);
    case Op::Round: return fl ? fun("rintf") : a(0, t);  // half to even, as torch.round
    case Op::Add: return bin("+");
    case Op::Sub: return bin("-");
    case Op::Mul: return bin("*");
    case Op::Div: {
      // By a constant: a multiply by its reciprocal (no MUFU.RCP per score, e.g. softcap's
      // score / cap). Otherwise the fast approximate division.
      const Node& d = g.nodes[n.args[1]];
      const double c = d.op != Op::Const ? 0.0
                       : d.type == DType::Float ? d.fvalue
                                                : static_cast<double>(d.ivalue);
      if (c != 0.0 && std::isfinite(1.0 / c) && std::fabs(1.0 / c) < 3e38 && std::fabs(1.0 / c) > 1e-37)
        return fmt::format("{} * {}", a(0, DType::Float), float_literal(1.0 / c));
      return fmt::format("__fdividef({}, {})", a(0, DType::Float), a(1, DType::Float));
    }
    case Op::FloorDiv:
      return fl ? fmt::format("floorf({} / {})", a(0, t), a(1, t))
                : fmt::format("ae::floordiv({}, {})", a(0, t), a(1, t));
    case Op::Mod:
      return fl ? fmt::format("ae::fmod_floor({}, {})", a(0, t), a(1, t))
                : fmt::format("ae::remainder({}, {})", a(0, t), a(1, t));
    case Op::Pow: {
      if (!fl) return fmt::format("ae::ipow({}, {})", a(0, t), a(1, t));
      // A small integer constant exponent multiplies, as torch's pow by a scalar does.
      const Node& e = g.nodes[n.args[1]];
      const double c = e.op != Op::Const ? 0.5
                       : e.type == DType::Float ? e.fvalue : static_cast<double>(e.ivalue);
      const std::string base = a(0, t);
      if (c == 0.0) return "1.f";
      if (c == 1.0) return base;
      if (c == 2.0) return fmt::format("{0} * {0}", base);
      if (c == 3.0) return fmt::format("{0} * {0} * {0}", base);
      if (c == -1.0) return fmt::format("1.f / {}", base);
      if (c == -2.0) return fmt::format("1.f / ({0} * {0})", base);
      // An integer exponent (cast to float or not): the branch-free form in custom
      // normalizations' kernels without gradient atomics (conservative tiles, plain loads:
      // the base's log2 merged across a tile's scores). Softmax's wide tiles spilled with it:
      // the sm80 forward's 64 keys, the sm90 forward's 176 (compile-all check).
      const int int_exp = e.type == DType::Int ? n.args[1]
                          : e.op == Op::Cast && g.nodes[e.args[0]].type == DType::Int ? e.args[0]
                                                                                       : -1;
      if (int_exp >= 0 && t_pow_i)
        return fmt::format("ae::fpow_i({}, {})", base, name(int_exp));
      return fmt::format("ae::fpow({}, {})", base, a(1, t));
    }
    case Op::Min:
      return fl ? fmt::format("fminf({}, {})", a(0, t), a(1, t))
                : fmt::format("ae::imin({}, {})", a(0, t), a(1, t));
    case Op::Max:
      return fl ? fmt::format("fmaxf({}, {})", a(0, t), a(1, t))
                : fmt::format("ae::imax({}, {})", a(0, t), a(1, t));
    case Op::Lt: return cmp("<");
    case Op::Le: return cmp("<=");
    case Op::Gt: return cmp(">");
    case Op::Ge: return cmp(">=");
    case Op::Eq: return cmp("==");
    case Op::Ne: return cmp("!=");
    case Op::And: return t == DType::Bool ? fmt::format("{} && {}", x(0), x(1)) : bin("&");
    case Op::Or: return t == DType::Bool ? fmt::format("{} || {}", x(0), x(1)) : bin("|");
    case Op::Xor: return t == DType::Bool ? fmt::format("{} != {}", x(0), x(1)) : bin("^");
    case Op::Where: return fmt::format("{} ? {} : {}", x(0), a(1, t), a(2, t));
  }
  throw ir::GraphError("codegen: unknown op");
}

// The user's source line as the text of a `//` comment that cannot end early or reach the
// next line, whatever it holds: printable ASCII only (no line ends, no other bytes), no
// backslash (one at the end would splice the next generated line into the comment) and no
// "??" (trigraphs, "??/" among them, are another backslash in older C++).
std::string comment_text(const std::string& loc) {
  std::string out;
  for (char c : loc) {
    const unsigned char u = static_cast<unsigned char>(c);
    const char safe = u < 0x20 || u > 0x7e ? '?' : c == '\\' ? '/' : c;
    if (safe == '?' && !out.empty() && out.back() == '?') continue;
    out += safe;
  }
  return out;
}

// The statements computing `roots` (and what they need), in graph order. Node `arg` (if any)
// is the function's `score` argument (the score times ScoreScales::in). `given` (if not
// empty): per node, an expression that supplies its value instead (its arguments are then
// not computed), or "" for none.
std::string statements(const Graph& g, const std::vector<int>& roots,
                       const std::vector<std::string>& dtypes, int arg = -1,
                       const std::vector<std::string>& given = {}) {
  auto given_at = [&](size_t i) { return i < given.size() && !given[i].empty(); };
  std::vector<bool> need(g.nodes.size(), false);
  for (int r : roots) need[r] = true;
  for (size_t i = g.nodes.size(); i-- > 0;)
    if (need[i] && static_cast<int>(i) != arg && !given_at(i))
      for (int a : g.nodes[i].args) need[a] = true;
  std::string s;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (!need[i]) continue;
    const Node& n = g.nodes[i];
    fmt::format_to(std::back_inserter(s), "    const {} {} = {};", ctype(n.type), name(i),
                   given_at(i) ? given[i]
                   : static_cast<int>(i) == arg ? "score" : expr(g, static_cast<int>(i), dtypes));
    if (!n.loc.empty()) fmt::format_to(std::back_inserter(s), "  // {}", comment_text(n.loc));
    s += '\n';
  }
  return s;
}

// A custom row normalization's members (templates/common/normalizers.h, CustomLog and
// CustomLinear): stat_term (what a kept score adds to its row's statistic, linear with a stat
// function only) and finish_row (O's factor and the statistic stored in the LSE's place, from
// the row's running max m and sum l; m is -inf for a row that kept nothing).
std::string custom_norm_members(const Graph& f, int stat, const std::vector<std::string>& dtypes) {
  std::string s;
  auto out = std::back_inserter(s);
  if (stat >= 0) {
    s += "  AE_DEVICE float stat_term(float score, int b, int h, int q_idx, int kv_idx) const {\n";
    s += statements(f, {stat}, dtypes);
    fmt::format_to(out, "    return {};\n  }}\n\n", conv(f, stat, DType::Float));
  }
  const int finish = f.output("finish");
  s += "  AE_DEVICE void finish_row(float m, float l, int b, int h, int q_idx, float& scale_o,\n"
       "                           float& stat_out) const {\n";
  if (f.log_domain) {  // stat_out holds the natural-log lse already (Softmax::finish)
    s += "    if (!(l > 0.f)) {\n      scale_o = 0.f;\n      return;\n    }\n"
         "    const float stat = stat_out;\n";
    const std::string h = finish >= 0 ? conv(f, finish, DType::Float) : "-stat";
    if (finish >= 0) s += statements(f, {finish}, dtypes);
    // O's factor exp(m + h(lse)), m in the log2 domain
    fmt::format_to(out, "    scale_o = ae::fast_exp2(m + {} * ae::kLog2e);\n  }}\n\n", h);
  } else {
    s += "    if (m == ae::neg_inf()) {  // nothing kept: 0 whatever c(0) is\n"
         "      scale_o = 0.f;\n      stat_out = 0.f;\n      return;\n    }\n"
         "    const float stat = l;\n    stat_out = stat;\n";
    if (finish >= 0) {
      s += statements(f, {finish}, dtypes);
      fmt::format_to(out, "    scale_o = {};\n  }}\n\n", conv(f, finish, DType::Float));
    } else {
      s += "    scale_o = 1.f;\n  }\n\n";
    }
  }
  return s;
}

// Where a load's element sits in its captured tensor's gradient (the load's index nodes).
std::string grad_offset_expr(const Node& ld) {
  if (ld.args.empty()) return "0";
  std::string idx;
  for (size_t a = 0; a < ld.args.size(); ++a)
    idx += fmt::format("{}static_cast<long long>({})", a ? ", " : "", name(ld.args[a]));
  return fmt::format("ae::grad_offset<{}>(va.buf[{}], {{{}}})", ld.args.size(), ld.index, idx);
}

// dx times the derivative `root` (of the score by the score parameter), adding dx times each
// load's derivative into the captured tensors' gradients: the GradSink's runs first_run on.
std::string grad_function(const char* fn, const Graph& bw, int root,
                          const std::vector<const ir::Output*>& loads, int first_run,
                          const std::vector<std::string>& dtypes, int arg) {
  std::string s;
  auto out = std::back_inserter(s);
  fmt::format_to(out, "  AE_DEVICE float {}(float score, int b, int h, int q_idx, int kv_idx, "
                 "float dx) const {{\n", fn);
  std::vector<int> roots = {root};
  for (const ir::Output* o : loads) {
    roots.push_back(o->node);
    roots.push_back(o->load);  // its index expressions
  }
  s += statements(bw, roots, dtypes, arg);
  for (size_t i = 0; i < loads.size(); ++i) {
    const ir::Output* o = loads[i];
    fmt::format_to(out, "    grads.add_run<{}, {}>(va, {}, dx * {});\n", first_run + i,
                   bw.nodes[o->load].index, grad_offset_expr(bw.nodes[o->load]), name(o->node));
  }
  fmt::format_to(out, "    return dx * {};\n  }}\n", name(root));
  return s;
}

// A custom normalization's backward row terms (common/bwd_rows.h bwd_rows_custom): from the
// row's saved statistic, dot = rowsum(dO * O) and dlse, the lse2 and delta its policy reads
// (norm::CustomLog, norm::CustomLinear), and the gradients of the captured tensors finish reads
// (by atomics: dL/dh = dot in the log domain, dL/dc = dO.A = dot / c in the linear one).
std::string custom_rows_member(const Graph& bw, const std::vector<std::string>& dtypes,
                               const std::vector<bool>& buffer_grads) {
  std::string s;
  auto out = std::back_inserter(s);
  const int finish = bw.output("finish"), d_finish = bw.output("d_finish");
  std::vector<int> roots;
  if (finish >= 0) roots = {finish, d_finish};
  std::vector<const ir::Output*> d_loads;
  for (const ir::Output& o : bw.outputs) {
    const int buffer = o.load >= 0 ? bw.nodes[o.load].index : -1;
    if (o.name != "d_load_finish" || buffer >= static_cast<int>(buffer_grads.size()) ||
        !buffer_grads[buffer])
      continue;
    d_loads.push_back(&o);
    roots.push_back(o.node);
    roots.push_back(o.load);  // its index expressions
  }
  s += "\n  AE_DEVICE void custom_rows(float stat, float dot, float dlse, int b, int h, int q_idx,\n"
       "                            float& lse2, float& delta) const {\n";
  std::string coef;  // what the finish's load derivatives are multiplied by
  if (bw.log_domain) {
    s += "    if (stat == ae::neg_inf()) {  // nothing kept: P = 0\n"
         "      lse2 = -ae::neg_inf();\n      delta = 0.f;\n      return;\n    }\n";
    if (!roots.empty()) s += statements(bw, roots, dtypes);
    fmt::format_to(out, "    const float hv = {}, dhv = {};\n",
                   finish >= 0 ? conv(bw, finish, DType::Float) : "-stat",
                   finish >= 0 ? conv(bw, d_finish, DType::Float) : "-1.f");
    s += "    lse2 = -hv * ae::kLog2e;\n";
    // (a zero term stays 0 where the exp overflows: no 0 * inf)
    s += bw.detach_stats
             ? "    delta = 0.f;  // detach_stats: nothing flows through the statistic\n"
             : "    const float t = fmaf(dhv, dot, dlse);\n"
               "    delta = t == 0.f ? 0.f : -t * __expf(-hv - stat);\n";
    coef = "dot";
  } else {
    if (!roots.empty()) s += statements(bw, roots, dtypes);
    fmt::format_to(out, "    const float cv = {}, dcv = {};\n",
                   finish >= 0 ? conv(bw, finish, DType::Float) : "1.f",
                   finish >= 0 ? conv(bw, d_finish, DType::Float) : "0.f");
    // dO . A (A = sum_j f v) from O = c A: lost where c(L) = 0 (the gradient through c is then
    // 0 here, not in the reference executor).
    s += "    const float wa = cv != 0.f ? dot / cv : 0.f;  // dO . A, A = sum_j f v\n"
         "    lse2 = cv;\n";
    // (c'(0) may be inf in a row that keeps nothing, where wa is 0)
    s += bw.detach_stats ? "    delta = 0.f;  // detach_stats: nothing flows through the statistic\n"
                         : "    delta = (wa != 0.f ? dcv * wa : 0.f) + dlse;\n";
    coef = "wa";
  }
  for (const ir::Output* o : d_loads) {
    const Node& ld = bw.nodes[o->load];
    fmt::format_to(out, "    if ({} != 0.f) atomicAdd(va.buf[{}].grad + {}, {} * {});\n", coef,
                   ld.index, grad_offset_expr(ld), coef, name(o->node));
  }
  s += "  }\n";
  return s;
}

// The mask split by its loads' indices (codegen/mask_split.h): MaskRow and MaskCol hold the
// row and column terms, mask_row and mask_col compute them, and mask_rc the mask from them.
// Without terms the structs are empty and mask_rc is mask.
std::string mask_split_members(const Graph& f, const MaskSplit& split, int mask,
                               const std::vector<std::string>& dtypes) {
  std::string s;
  auto out = std::back_inserter(s);
  fmt::format_to(out, "  static constexpr bool kMaskSplit = {};\n",
                 split.empty() ? "false" : "true");
  fmt::format_to(out, "  static constexpr int kMaskRowTerms = {}, kMaskColTerms = {};\n",
                 split.row_terms.size(), split.col_terms.size());
  std::vector<std::string> given(f.nodes.size());
  auto part = [&](const char* type, const char* fn, const char* idx, const char* from,
                  const std::vector<int>& terms) {
    fmt::format_to(out, "  struct {} {{", type);
    for (int t : terms) fmt::format_to(out, " {} {};", ctype(f.nodes[t].type), name(t));
    s += terms.empty() ? "};\n" : " };\n";
    fmt::format_to(out, "  AE_DEVICE {} {}(int b, int h, int {}) const {{\n", type, fn, idx);
    s += statements(f, terms, dtypes);
    s += "    return {";
    for (size_t i = 0; i < terms.size(); ++i)
      fmt::format_to(out, "{}{}", i ? ", " : "", name(terms[i]));
    s += "};\n  }\n";
    for (int t : terms) given[t] = fmt::format("{}.{}", from, name(t));
  };
  part("MaskRow", "mask_row", "q_idx", "r", split.row_terms);
  part("MaskCol", "mask_col", "kv_idx", "c", split.col_terms);
  s += "  AE_DEVICE bool mask_rc(const MaskRow& r, const MaskCol& c, int b, int h, int q_idx,\n"
       "                         int kv_idx) const {\n";
  if (split.empty()) {
    s += "    return mask(b, h, q_idx, kv_idx);\n  }\n\n";
  } else {
    s += statements(f, {mask}, dtypes, -1, given);
    fmt::format_to(out, "    return {};\n  }}\n\n", name(mask));
  }
  return s;
}

}  // namespace

std::string emit_variant(const ir::Variant& v, const std::vector<std::string>& dtypes,
                         const std::vector<bool>& buffer_grads, bool shared_grads,
                         bool plain_loads_wanted) {
  const Graph& f = v.forward;
  const Graph& bw = v.backward;
  if (dtypes.size() != f.buffers.size())
    throw ir::GraphError(fmt::format("codegen: {} buffer dtypes for {} captured tensors",
                                     dtypes.size(), f.buffers.size()));
  if (!buffer_grads.empty() && buffer_grads.size() != f.buffers.size())
    throw ir::GraphError(fmt::format("codegen: {} buffer gradient flags for {} captured tensors",
                                     buffer_grads.size(), f.buffers.size()));
  const bool custom = f.normalize == ir::Normalize::Custom;
  // A custom normalization's kernels compute its weight where others compute the score_mod.
  const int score = f.output(custom ? "weight" : "score"), mask = f.output("mask");
  const bool identity = custom ? f.nodes[score].op == Op::Param &&
                                     f.nodes[score].index == static_cast<int>(ir::Param::Score)
                               : !v.analysis.has_score_mod;
  const bool has_mask = mask >= 0 && v.analysis.has_mask;
  std::string s;
  auto out = std::back_inserter(s);
  fmt::format_to(out, "// Variant {} (generated from its op graph; n<i> is node %<i>).\n", v.key);
  // A kernel uses some of the Variant's members, never all (a forward has no use for grad):
  // NVRTC's "declared but never referenced" (#177) is silenced for this struct only, so that
  // any other warning in generated code stands out (CI fails on them).
  s += "#if defined(__CUDACC_RTC__) || defined(__NVCC__)\n#pragma nv_diagnostic push\n"
       "#pragma nv_diag_suppress 177\n#endif\n";
  s += "struct Variant {\n  const ae::VariantArgs& va;\n";
  fmt::format_to(out, "  static constexpr bool kIdentity = {};\n", identity ? "true" : "false");
  fmt::format_to(out, "  static constexpr bool kHasMask = {};\n", has_mask ? "true" : "false");
  // A score_mod that writes an infinity (torch.where(..., s, -inf)) masks scores of blocks
  // the walk calls full: every block's V is then scanned for inf and nan
  // (templates/nvidia/exact_pv.h).
  const bool score_masks = ir::has_infinite_constant(f);
  fmt::format_to(out, "  static constexpr bool kScoreMasks = {};\n",
                 score_masks ? "true" : "false");
  // Whether the mods read a captured tensor (the sm90 forward's P V descriptors, sm90/fwd.h).
  bool loads = false;
  for (const Node& n : f.nodes) loads = loads || n.op == Op::Load;
  fmt::format_to(out, "  static constexpr bool kLoads = {};\n", loads ? "true" : "false");
  // The row normalization's policy (templates/common/normalizers.h).
  const int stat = custom && !f.log_domain ? f.output("stat") : -1;
  fmt::format_to(out, "  static constexpr bool kStat = {};\n", stat >= 0 ? "true" : "false");
  fmt::format_to(out, "  using Norm = ae::norm::{};\n",
                 !custom ? (f.normalize == ir::Normalize::Softmax ? "Softmax" : "None")
                 : f.log_domain ? "CustomLog"
                 : stat >= 0 ? "CustomLinear<false>" : "CustomLinear<true>");
  // The backward's additions into captured tensors' gradients: dx * d score_mod / d value for
  // every load of a buffer in buffer_grads. Only those: an atomic is a store the compiler must
  // order the variant's loads around (ALiBi's slope was reloaded per score), so a kernel for
  // tensors without gradients has none. Each is a run (GradSink::add_run): summed in a
  // register while a thread's offset stays the same (a per-head slope over a whole block; a
  // relative-bias table's clamped distances, which most scores of a long sequence share),
  // added into the sink's region when it changes.
  // A custom normalization's kernels differentiate its weight (through the score_mod).
  const char* d_score_name = custom ? "d_weight" : "d_score";
  const char* d_load_name = custom ? "d_load_weight" : "d_load";
  auto loads_named = [&](const char* d_name) {
    std::vector<const ir::Output*> found;
    for (const ir::Output& o : bw.outputs)
      if (o.name == d_name) {
        const int buffer = bw.nodes[o.load].index;
        if (buffer < static_cast<int>(buffer_grads.size()) && buffer_grads[buffer])
          found.push_back(&o);
      }
    return found;
  };
  const std::vector<const ir::Output*> d_loads = loads_named(d_load_name);
  // A custom linear normalization's stat: its own derivative (grad_stat) and runs, after grad's.
  const std::vector<const ir::Output*> stat_loads =
      stat >= 0 ? loads_named("d_load_stat") : std::vector<const ir::Output*>{};
  // The backward's weight and both derivatives from one function (common/bwd_scores.h):
  // where no captured tensor takes a gradient (the runs would need dx before it is known).
  const bool fused_stat_grads = stat >= 0 && !identity && d_loads.empty() && stat_loads.empty();
  fmt::format_to(out, "  static constexpr bool kFusedStatGrads = {};\n",
                 fused_stat_grads ? "true" : "false");
  std::vector<const ir::Output*> all_loads = d_loads;
  all_loads.insert(all_loads.end(), stat_loads.begin(), stat_loads.end());
  // Plain loads (merged across a tile's scores) where no gradient atomics can alias them; for
  // custom normalizations, and the others with AE_PLAIN_LOADS=1 until they are measured.
  struct PlainLoads {
    PlainLoads(bool on, bool pow_i) { t_plain_loads = on, t_pow_i = pow_i; }
    ~PlainLoads() { t_plain_loads = t_pow_i = false; }
  } plain_loads((custom || plain_loads_wanted) && all_loads.empty(), custom && all_loads.empty());
  std::vector<int> tensor_rank(f.buffers.size(), -1);
  std::string runs, tensors;
  for (const ir::Output* o : all_loads) {
    const Node& ld = bw.nodes[o->load];
    tensor_rank[ld.index] = static_cast<int>(ld.args.size());
    fmt::format_to(std::back_inserter(runs), ", {}", ld.index);
  }
  for (size_t b = 0; b < tensor_rank.size(); ++b)
    if (tensor_rank[b] >= 0)
      fmt::format_to(std::back_inserter(tensors), "{}ae::GradTensor<{}, {}>",
                     tensors.empty() ? "" : ", ", b, tensor_rank[b]);
  const std::string region = shared_grads && !tensors.empty()
      ? fmt::format("ae::SharedGrads<{}>", tensors) : std::string("ae::GlobalGrads");
  fmt::format_to(out, "  mutable ae::GradSink<{}{}> grads;\n", region, runs);
  // The score_mod is kOutScale * score(kInScale * s) and grad takes kInScale * s as well:
  // the templates fold both factors into multiplies they do anyway (score_scales.h).
  const ScoreScales sc = custom ? ScoreScales{} : find_score_scales(v);
  fmt::format_to(out, "  static constexpr float kInScale = {}, kOutScale = {};\n\n",
                 float_literal(sc.in), float_literal(sc.out));

  const int score_root = sc.out_inner >= 0 ? sc.out_inner : score;
  s += "  AE_DEVICE float score(float score, int b, int h, int q_idx, int kv_idx) const {\n";
  s += statements(f, {score_root}, dtypes, sc.in_fwd);
  fmt::format_to(out, "    return {};\n  }}\n\n", conv(f, score_root, DType::Float));

  if (custom) s += custom_norm_members(f, stat, dtypes);
  if (stat >= 0) {
    // The weight and the stat term in one: the score_mod's work that both read (a decay's
    // pow, a load) once per score, not once per function.
    s += "  AE_DEVICE float score_stat(float score, int b, int h, int q_idx, int kv_idx,\n"
         "                             float& stat) const {\n";
    s += statements(f, {score_root, stat}, dtypes, sc.in_fwd);
    fmt::format_to(out, "    stat = {};\n    return {};\n  }}\n\n", conv(f, stat, DType::Float),
                   conv(f, score_root, DType::Float));
  }

  s += "  AE_DEVICE bool mask(int b, int h, int q_idx, int kv_idx) const {\n";
  if (has_mask) {
    s += statements(f, {mask}, dtypes);
    fmt::format_to(out, "    return {};\n  }}\n\n", name(mask));
  } else {
    s += "    return true;\n  }\n\n";
  }
  s += mask_split_members(f, has_mask ? split_mask(f, mask) : MaskSplit{}, mask, dtypes);

  s += grad_function("grad", bw, bw.output(d_score_name), d_loads, 0, dtypes, sc.in_bw);
  if (stat >= 0)
    s += grad_function("grad_stat", bw, bw.output("d_stat"), stat_loads,
                       static_cast<int>(d_loads.size()), dtypes, -1);
  if (fused_stat_grads) {
    s += "  AE_DEVICE void score_grads(float score, int b, int h, int q_idx, int kv_idx, float& x,\n"
         "                             float& dw, float& dg) const {\n";
    const int weight = bw.output("weight"), d_weight = bw.output(d_score_name),
              d_stat = bw.output("d_stat");
    s += statements(bw, {weight, d_weight, d_stat}, dtypes, sc.in_bw);
    fmt::format_to(out, "    x = {};\n    dw = {};\n    dg = {};\n  }}\n",
                   conv(bw, weight, DType::Float), conv(bw, d_weight, DType::Float),
                   conv(bw, d_stat, DType::Float));
  }
  if (custom) s += custom_rows_member(bw, dtypes, buffer_grads);
  s += "};\n";
  s += "#if defined(__CUDACC_RTC__) || defined(__NVCC__)\n#pragma nv_diagnostic pop\n#endif\n";
  return s;
}

}  // namespace ae::codegen
