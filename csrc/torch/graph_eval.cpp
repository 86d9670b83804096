#include "torch/graph_eval.h"

#include <c10/util/Exception.h>

#include "ir/error.h"
#include "torch/messages.h"

namespace ae::torch_ops {
namespace {

using ir::DType;
using ir::Op;

at::ScalarType scalar_type(DType t, at::ScalarType compute) {
  switch (t) {
    case DType::Float: return compute;
    case DType::Int: return at::kLong;
    case DType::Bool: return at::kBool;
  }
  return compute;
}

at::Tensor param(ir::Param p, const EvalInputs& in) {
  auto idx = [&](int64_t n, int dim, int64_t start = 0) {
    std::vector<int64_t> shape(4, 1);
    shape[dim] = n;
    return at::arange(start, start + n,
                      at::TensorOptions().dtype(at::kLong).device(in.score.device())).view(shape);
  };
  switch (p) {
    case ir::Param::Score: return in.score;
    case ir::Param::B: return idx(in.batch, 0);
    case ir::Param::H: return idx(in.heads, 1);
    case ir::Param::QIdx: return idx(in.q_len, 2, in.q_offset);
    case ir::Param::KvIdx: return idx(in.kv_len, 3);
    case ir::Param::Stat:
      AE_CHECK(VALUE, in.stat.defined(), "internal error: the row statistic is not known yet");
      return in.stat;
  }
  return {};
}

at::Tensor load(const ir::Graph& g, const ir::Node& n, const std::vector<at::Tensor>& idx,
                const EvalInputs& in) {
  const at::Tensor& buf = in.buffers.at(n.index);
  const std::string& name = g.buffers[n.index].name;
  for (size_t d = 0; d < idx.size(); ++d) {
    int64_t lo = idx[d].min().item<int64_t>(), hi = idx[d].max().item<int64_t>();
    AE_CHECK(INDEX, lo >= 0 && hi < buf.size(d), "{}",
             ir::at_loc(fmt::format("captured tensor '{}' (shape {}) is indexed out of range in "
                                    "dim {}: indices span [{}, {}]",
                                    name, shape_str(buf), d, lo, hi), n.loc));
  }
  if (idx.empty()) return buf.reshape({});
  std::vector<std::optional<at::Tensor>> indices(idx.begin(), idx.end());
  return buf.index(c10::List<std::optional<at::Tensor>>(indices));
}

at::Tensor apply(const ir::Node& n, std::vector<at::Tensor> a, at::ScalarType compute) {
  const at::ScalarType out = scalar_type(n.type, compute);
  // Arithmetic and comparisons work in the promoted operand type.
  auto promote_all = [&](at::ScalarType t) {
    for (auto& x : a) x = x.to(t);
  };
  auto operand = [&]() {
    at::ScalarType t = at::kBool;
    for (auto& x : a) t = at::promote_types(t, x.scalar_type());
    return t == at::kBool ? at::kLong : t;
  };
  switch (n.op) {
    case Op::Cast: return a[0].to(out);
    case Op::Neg: return at::neg(a[0].to(out));
    case Op::Not: return n.type == DType::Bool ? at::logical_not(a[0]) : at::bitwise_not(a[0]);
    case Op::Abs: return at::abs(a[0].to(out));
    case Op::Sign: return at::sign(a[0].to(out));
    case Op::Relu: return at::relu(a[0].to(out));
    case Op::Exp: return at::exp(a[0].to(out));
    case Op::Exp2: return at::exp2(a[0].to(out));
    case Op::Log: return at::log(a[0].to(out));
    case Op::Log2: return at::log2(a[0].to(out));
    case Op::Tanh: return at::tanh(a[0].to(out));
    case Op::Sigmoid: return at::sigmoid(a[0].to(out));
    case Op::Sqrt: return at::sqrt(a[0].to(out));
    case Op::Rsqrt: return at::rsqrt(a[0].to(out));
    case Op::Sin: return at::sin(a[0].to(out));
    case Op::Cos: return at::cos(a[0].to(out));
    case Op::Floor: return n.type == DType::Float ? at::floor(a[0]) : a[0].to(out);
    case Op::Ceil: return n.type == DType::Float ? at::ceil(a[0]) : a[0].to(out);
    case Op::Trunc: return n.type == DType::Float ? at::trunc(a[0]) : a[0].to(out);
    case Op::Round: return n.type == DType::Float ? at::round(a[0]) : a[0].to(out);
    case Op::Add: promote_all(out); return at::add(a[0], a[1]);
    case Op::Sub: promote_all(out); return at::sub(a[0], a[1]);
    case Op::Mul: promote_all(out); return at::mul(a[0], a[1]);
    case Op::Div: promote_all(out); return at::div(a[0], a[1]);
    case Op::FloorDiv: promote_all(out); return at::div(a[0], a[1], "floor");
    case Op::Mod: promote_all(out); return at::remainder(a[0], a[1]);
    case Op::Pow: promote_all(out); return at::pow(a[0], a[1]);
    case Op::Min: promote_all(out); return at::minimum(a[0], a[1]);
    case Op::Max: promote_all(out); return at::maximum(a[0], a[1]);
    case Op::Lt: promote_all(operand()); return at::lt(a[0], a[1]);
    case Op::Le: promote_all(operand()); return at::le(a[0], a[1]);
    case Op::Gt: promote_all(operand()); return at::gt(a[0], a[1]);
    case Op::Ge: promote_all(operand()); return at::ge(a[0], a[1]);
    case Op::Eq: promote_all(operand()); return at::eq(a[0], a[1]);
    case Op::Ne: promote_all(operand()); return at::ne(a[0], a[1]);
    case Op::And:
      promote_all(out);
      return n.type == DType::Bool ? at::logical_and(a[0], a[1]) : at::bitwise_and(a[0], a[1]);
    case Op::Or:
      promote_all(out);
      return n.type == DType::Bool ? at::logical_or(a[0], a[1]) : at::bitwise_or(a[0], a[1]);
    case Op::Xor:
      promote_all(out);
      return n.type == DType::Bool ? at::logical_xor(a[0], a[1]) : at::bitwise_xor(a[0], a[1]);
    case Op::Where: return at::where(a[0], a[1].to(out), a[2].to(out));
    case Op::Param:
    case Op::Const:
    case Op::Load:
      break;
  }
  AE_CHECK(VALUE, false, "internal error: cannot evaluate op {}", ir::op_info(n.op).name);
}

}  // namespace

std::vector<at::Tensor> eval_graph(const ir::Graph& g, const EvalInputs& in,
                                   const std::function<bool(const ir::Output&)>& only) {
  std::vector<bool> needed(g.nodes.size(), false);
  for (const ir::Output& o : g.outputs) {
    if (only && !only(o)) continue;
    needed[o.node] = true;
    if (o.load >= 0) needed[o.load] = true;
  }
  for (size_t i = g.nodes.size(); i-- > 0;)
    if (needed[i])
      for (int a : g.nodes[i].args) needed[a] = true;

  const auto dev = in.score.device();
  std::vector<at::Tensor> v(g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (!needed[i]) continue;
    const ir::Node& n = g.nodes[i];
    std::vector<at::Tensor> args;
    for (int a : n.args) args.push_back(v[a]);
    if (n.op == Op::Param) {
      v[i] = param(static_cast<ir::Param>(n.index), in);
    } else if (n.op == Op::Const) {
      auto opts = at::TensorOptions().dtype(scalar_type(n.type, in.compute)).device(dev);
      v[i] = n.type == DType::Float ? at::scalar_tensor(n.fvalue, opts)
                                    : at::scalar_tensor(static_cast<int64_t>(n.ivalue), opts);
    } else if (n.op == Op::Load) {
      v[i] = load(g, n, args, in).to(scalar_type(n.type, in.compute));
    } else {
      v[i] = apply(n, std::move(args), in.compute);
    }
  }
  return v;
}

}  // namespace ae::torch_ops
