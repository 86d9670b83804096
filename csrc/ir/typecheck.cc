#include "ir/typecheck.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ir/error.h"

namespace ae::ir {
namespace {

[[noreturn]] void fail(const Node& n, const std::string& what) {
  throw GraphError(at_loc(what, n.loc));
}

DType arg_type(const Graph& g, const Node& n, int a) { return g.nodes[n.args[a]].type; }

// bool arithmetic counts as int, as in Python (True + True == 2).
DType arith(DType t) { return t == DType::Bool ? DType::Int : t; }

DType infer(const Graph& g, const Node& n) {
  const char* name = op_info(n.op).name;
  switch (n.op) {
    case Op::Param:
    case Op::Const:
    case Op::Cast:
      return n.type;
    case Op::Load: {
      if (n.index < 0 || n.index >= static_cast<int>(g.buffers.size()))
        fail(n, fmt::format("load of unknown buffer ${}", n.index));
      const Buffer& b = g.buffers[n.index];
      if (n.args.size() != b.shape.size())
        fail(n, fmt::format("captured tensor '{}' has rank {} (shape [{}]) but is indexed with {} "
                            "index{}", b.name, b.shape.size(), fmt::join(b.shape, ", "),
                            n.args.size(), n.args.size() == 1 ? "" : "es"));
      for (size_t a = 0; a < n.args.size(); ++a)
        if (arg_type(g, n, a) != DType::Int)
          fail(n, fmt::format("captured tensor '{}' is indexed by a {} value (index {}); "
                              "indices must be integers (use .long() or torch.floor)",
                              b.name, dtype_name(arg_type(g, n, a)), a));
      return b.type;
    }
    case Op::Neg:
    case Op::Abs:
    case Op::Sign:
    case Op::Relu:
      return arith(arg_type(g, n, 0));
    case Op::Not:
      if (arg_type(g, n, 0) == DType::Float) fail(n, "'~' (not) needs a bool or int, got a float");
      return arg_type(g, n, 0);
    case Op::Floor:
    case Op::Ceil:
    case Op::Trunc:
    case Op::Round:
      return arith(arg_type(g, n, 0));
    case Op::Exp: case Op::Exp2: case Op::Log: case Op::Log2: case Op::Tanh:
    case Op::Sigmoid: case Op::Sqrt: case Op::Rsqrt: case Op::Sin: case Op::Cos:
      return DType::Float;
    case Op::Add: case Op::Sub: case Op::Mul: case Op::FloorDiv: case Op::Mod:
    case Op::Pow: case Op::Min: case Op::Max:
      return arith(promote(arg_type(g, n, 0), arg_type(g, n, 1)));
    case Op::Div:
      return DType::Float;
    case Op::Lt: case Op::Le: case Op::Gt: case Op::Ge: case Op::Eq: case Op::Ne:
      return DType::Bool;
    case Op::And:
    case Op::Or:
    case Op::Xor: {
      DType t = promote(arg_type(g, n, 0), arg_type(g, n, 1));
      if (t == DType::Float)
        fail(n, fmt::format("'{}' needs bool or int operands, got a float", name));
      return t;
    }
    case Op::Where:
      if (arg_type(g, n, 0) != DType::Bool)
        fail(n, fmt::format("torch.where needs a bool condition, got {}",
                            dtype_name(arg_type(g, n, 0))));
      return promote(arg_type(g, n, 1), arg_type(g, n, 2));
  }
  fail(n, "unknown op");
}

}  // namespace

DType promote(DType a, DType b) { return static_cast<DType>(std::max(int(a), int(b))); }

void infer_types(Graph& g) {
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    Node& n = g.nodes[i];
    int arity = op_info(n.op).arity;
    if (arity >= 0 && static_cast<int>(n.args.size()) != arity)
      fail(n, fmt::format("'{}' takes {} argument{}, got {}", op_info(n.op).name, arity,
                          arity == 1 ? "" : "s", n.args.size()));
    for (int a : n.args)
      if (a < 0 || a >= static_cast<int>(i))
        fail(n, fmt::format("node %{} refers to %{}, which is not defined before it", i, a));
    n.type = infer(g, n);
  }
}

namespace {

// Which parameters the node reads, as a bit set over Param.
uint32_t params_read(const Graph& g, int id) {
  std::vector<uint32_t> d(id + 1, 0);
  for (int i = 0; i <= id; ++i) {
    const Node& n = g.nodes[i];
    if (n.op == Op::Param) d[i] = 1u << n.index;
    for (int a : n.args) d[i] |= d[a];
  }
  return d[id];
}

// The per-element outputs cannot read the row statistic (it is their sum), and the per-row
// finish cannot read what varies along the row.
void check_inputs_of(const Graph& g, const Output& o) {
  const uint32_t d = params_read(g, o.node);
  const Node& n = g.nodes[o.node];
  auto reads = [&](Param p) { return (d & (1u << static_cast<int>(p))) != 0; };
  if (o.name == "finish" && (reads(Param::Score) || reads(Param::KvIdx)))
    throw GraphError(at_loc("the normalization's finish function runs once per query row: it "
                            "cannot read a score or kv_idx", n.loc));
  if (o.name != "finish" && reads(Param::Stat))
    throw GraphError(at_loc(fmt::format("the {} output reads the row statistic, which only the "
                                        "finish function may read", o.name), n.loc));
}

}  // namespace

void check_outputs(Graph& g) {
  for (Output& o : g.outputs) {
    if (o.node < 0 || o.node >= static_cast<int>(g.nodes.size()))
      throw GraphError(fmt::format("output '{}' refers to missing node %{}", o.name, o.node));
    const Node& n = g.nodes[o.node];
    if (o.name == "mask" && n.type != DType::Bool)
      throw GraphError(at_loc(fmt::format("mask_mod must return a bool (e.g. q_idx >= kv_idx), "
                                          "but it returns a {}", dtype_name(n.type)), n.loc));
    if (o.name == "score" && n.type == DType::Bool)
      throw GraphError(at_loc("score_mod must return a number, but it returns a bool (to mask, "
                              "use mask_mod or torch.where(cond, score, -float('inf')))", n.loc));
    const bool norm_output = o.name == "weight" || o.name == "stat" || o.name == "finish";
    if (norm_output && n.type == DType::Bool)
      throw GraphError(at_loc(fmt::format("the normalization's {} function must return a "
                                          "number, but it returns a bool", o.name), n.loc));
    if (norm_output || o.name == "score" || o.name == "mask") check_inputs_of(g, o);
    if ((o.name == "score" || norm_output) && n.type == DType::Int) {
      Node cast;
      cast.op = Op::Cast;
      cast.type = DType::Float;
      cast.args = {o.node};
      cast.loc = n.loc;
      o.node = g.add(std::move(cast));
    }
  }
}

}  // namespace ae::ir
