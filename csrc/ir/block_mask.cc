#include "ir/block_mask.h"

#include <vector>

#include "ir/mask_conjunct.h"
#include "ir/passes.h"

namespace ae::ir {
namespace {

bool is_const(const Graph& g, int n, int64_t v) {
  const Node& x = g.nodes[n];
  return x.op == Op::Const && x.type == DType::Int && x.ivalue == v;
}

// Node n is p // c for an int constant c > 0: c, else 0.
int64_t divisor(const Graph& g, int n, Param p) {
  const Node& x = g.nodes[n];
  if (x.op != Op::FloorDiv || !is_param(g, x.args[0], p)) return 0;
  const Node& c = g.nodes[x.args[1]];
  return c.op == Op::Const && c.type == DType::Int && c.ivalue > 0 ? c.ivalue : 0;
}

// Node n loads a 4-D buffer of `type` at (b | 0, h | h // G | 0, q_idx // BQ | 0, kv_idx // BK)
// (0: one row of blocks for every query, BQ 0: a decode's blocks).
bool block_load(const Graph& g, int n, DType type, BlockMaskLookup* out) {
  const Node& x = g.nodes[n];
  if (x.op != Op::Load || x.args.size() != 4 || x.type != type) return false;
  if (g.buffers[x.index].shape.size() != 4) return false;
  BlockMaskLookup f;
  if (is_param(g, x.args[0], Param::B)) f.by_batch = true;
  else if (!is_const(g, x.args[0], 0)) return false;
  if (is_param(g, x.args[1], Param::H)) f.head_div = 1;
  else if (const int64_t d = divisor(g, x.args[1], Param::H); d > 0) f.head_div = static_cast<int>(d);
  else if (!is_const(g, x.args[1], 0)) return false;
  const int64_t bq = is_const(g, x.args[2], 0) ? 0 : divisor(g, x.args[2], Param::QIdx),
                bk = divisor(g, x.args[3], Param::KvIdx);
  if (bq < 0 || (bq == 0 && !is_const(g, x.args[2], 0)) || bk <= 0 || bq > (1 << 20) ||
      bk > (1 << 20))
    return false;
  f.block_q = static_cast<int>(bq), f.block_k = static_cast<int>(bk);
  f.buffer = x.index;
  *out = f;
  return true;
}

// Node n is load == value for a codes load: the load's node, else -1.
int code_test(const Graph& g, int n, int64_t value) {
  const Node& x = g.nodes[n];
  if (x.op != Op::Eq) return -1;
  if (is_const(g, x.args[1], value)) return x.args[0];
  if (is_const(g, x.args[0], value)) return x.args[1];
  return -1;
}

// Node n is (s == 2) | ((s == 1) & rest) (either order of each pair) or (s == 2) | (s == 1),
// s a codes load read by those two tests alone.
bool codes_form(const Graph& g, const std::vector<int>& uses, int n, BlockMaskLookup* out) {
  const Node& x = g.nodes[n];
  if (x.op != Op::Or || x.type != DType::Bool) return false;
  for (int full_side = 0; full_side < 2; ++full_side) {
    const int full = x.args[full_side], other = x.args[1 - full_side];
    const int s = code_test(g, full, 2);
    if (s < 0 || uses[full] != 1 || uses[other] != 1 || uses[s] != 2) continue;
    int rest = -1, partial = other;
    const Node& o = g.nodes[other];
    if (o.op == Op::And && o.args.size() == 2) {
      for (int side = 0; side < 2; ++side)
        if (code_test(g, o.args[side], 1) == s && uses[o.args[side]] == 1)
          partial = o.args[side], rest = o.args[1 - side];
      if (partial == other) continue;
    }
    if (code_test(g, partial, 1) != s) continue;
    BlockMaskLookup f;
    if (!block_load(g, s, DType::Int, &f)) continue;
    f.codes = true, f.node = n, f.rest = rest;
    *out = f;
    return true;
  }
  return false;
}

}  // namespace

BlockMaskLookup find_block_mask(const Graph& g) {
  const std::vector<int> uses = use_counts(g);
  BlockMaskLookup found;
  find_mask_conjunct(g, uses, [&](int n) {
    if (block_load(g, n, DType::Bool, &found)) found.node = n;
    // The codes form only as the whole mask: under an and, a full block (code 2) would keep
    // scores the and's other conjuncts drop, and the table could not say so.
    else if (n == g.output("mask")) codes_form(g, uses, n, &found);
    return found.buffer >= 0;
  });
  return found;
}

Graph without_block_mask(const Graph& g, const BlockMaskLookup& found) {
  Graph out = g;
  if (found.codes && found.rest >= 0) {
    out.nodes[found.node] = g.nodes[found.rest];  // (its arguments' ids are smaller still)
  } else {
    Node t;
    t.op = Op::Const;
    t.type = DType::Bool;
    t.ivalue = 1;
    out.nodes[found.node] = t;
  }
  return optimize(out);
}

}  // namespace ae::ir
