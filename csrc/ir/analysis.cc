#include <fmt/format.h>

#include <cmath>

#include "ir/passes.h"

namespace ae::ir {

uint32_t param_dep(Param p) { return 1u << static_cast<int>(p); }

std::string deps_text(uint32_t d) {
  static const char* names[] = {"score", "b", "h", "q_idx", "kv_idx", "stat", "buffers"};
  std::string s;
  for (int i = 0; i < 7; ++i)
    if (d & (1u << i)) s += fmt::format("{}{}", s.empty() ? "" : ", ", names[i]);
  return s.empty() ? "nothing (constant)" : s;
}

bool has_infinite_constant(const Graph& g) {
  for (const Node& n : g.nodes)
    if (n.op == Op::Const && n.type == DType::Float && std::isinf(n.fvalue)) return true;
  return false;
}

namespace {
// An op the GPU computes with a special-function unit instruction or a sequence around one.
bool is_special(const Graph& g, const Node& n) {
  switch (n.op) {
    case Op::Exp: case Op::Exp2: case Op::Log: case Op::Log2: case Op::Tanh: case Op::Sigmoid:
    case Op::Sqrt: case Op::Rsqrt: case Op::Sin: case Op::Cos: case Op::Pow:
      return true;
    case Op::Div: return n.type == DType::Float && g.nodes[n.args[1]].op != Op::Const;
    default: return false;
  }
}
}  // namespace

Analysis analyze(const Graph& g) {
  Analysis a;
  a.writes_infinity = has_infinite_constant(g);
  a.deps.resize(g.nodes.size(), 0);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    uint32_t d = 0;
    if (n.op == Op::Param) d = param_dep(static_cast<Param>(n.index));
    if (n.op == Op::Load) d = kDepBuffer;
    for (int x : n.args) d |= a.deps[x];
    a.deps[i] = d;
  }
  bool per_element_load = false;
  // elem_load[i]: node i's value needs a load indexed by q_idx or kv_idx (a load per score).
  std::vector<char> elem_load(g.nodes.size(), 0);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    for (int x : n.args) {
      elem_load[i] |= elem_load[x];
      if (n.op == Op::Load && (a.deps[x] & (kDepQ | kDepKv)) != 0) elem_load[i] = 1;
    }
    per_element_load |= n.op == Op::Load && elem_load[i];
  }
  if (const Output* s = g.find_output("score")) {
    const Node& n = g.nodes[s->node];
    a.score_deps = a.deps[s->node];
    a.has_score_mod = !(n.op == Op::Param && n.index == static_cast<int>(Param::Score));
    a.score_loads_per_element = per_element_load && (a.score_deps & kDepBuffer) != 0;
    // a pow of a non-constant exponent among the score's operands (nodes come in order)
    std::vector<char> used(g.nodes.size(), 0);
    used[s->node] = 1;
    for (int i = s->node; i >= 0; --i) {
      if (!used[i]) continue;
      const Node& u = g.nodes[i];
      a.score_pow = a.score_pow || (u.op == Op::Pow && g.nodes[u.args[1]].op != Op::Const);
      a.score_special = a.score_special ||
                        ((a.deps[i] & (kDepScore | kDepQ | kDepKv)) != 0 && is_special(g, u));
      for (int x : u.args) used[x] = 1;
    }
  }
  if (const Output* m = g.find_output("mask")) {
    const Node& n = g.nodes[m->node];
    a.mask_deps = a.deps[m->node];
    a.has_mask = !(n.op == Op::Const && n.ivalue != 0);
    a.mask_is_index_only = (a.mask_deps & kDepScore) == 0;
    a.mask_uses_batch_or_head = (a.mask_deps & (kDepB | kDepH)) != 0;
    a.mask_loads_per_element = elem_load[m->node] != 0;
  }
  return a;
}

std::string Analysis::text() const {
  std::string s;
  s += fmt::format("score_mod: {}\n", has_score_mod ? "depends on " + deps_text(score_deps)
                                                     : std::string("identity"));
  if (!has_mask) {
    s += "mask_mod: none (every position kept)\n";
  } else {
    s += fmt::format("mask_mod: depends on {}{}\n", deps_text(mask_deps),
                     mask_is_index_only ? " (index-only: can become block sparsity)" : "");
  }
  return s;
}

}  // namespace ae::ir
