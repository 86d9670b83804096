#include "ir/graph.h"

#include <fmt/format.h>

#include <iterator>

#include "ir/error.h"
#define XXH_INLINE_ALL
#include "xxhash/xxhash.h"

namespace ae::ir {
namespace {

// Indexed by Op; keep in the enum's order.
const OpInfo kOps[] = {
    {"param", 0}, {"const", 0}, {"load", -1},
    {"neg", 1}, {"not", 1}, {"abs", 1}, {"sign", 1}, {"exp", 1}, {"exp2", 1}, {"log", 1},
    {"log2", 1}, {"tanh", 1}, {"sigmoid", 1}, {"relu", 1}, {"sqrt", 1}, {"rsqrt", 1},
    {"sin", 1}, {"cos", 1}, {"floor", 1}, {"ceil", 1}, {"trunc", 1}, {"round", 1},
    {"cast", 1},
    {"add", 2}, {"sub", 2}, {"mul", 2}, {"div", 2}, {"floordiv", 2}, {"mod", 2}, {"pow", 2},
    {"min", 2}, {"max", 2}, {"lt", 2}, {"le", 2}, {"gt", 2}, {"ge", 2}, {"eq", 2}, {"ne", 2},
    {"and", 2}, {"or", 2}, {"xor", 2},
    {"where", 3},
};
constexpr int kNumOps = sizeof(kOps) / sizeof(kOps[0]);
static_assert(kNumOps == static_cast<int>(Op::Where) + 1, "kOps out of step with Op");

const char* const kParams[kNumParams] = {"score", "b", "h", "q_idx", "kv_idx", "stat"};

std::string const_text(const Node& n) {
  switch (n.type) {
    case DType::Float: return fmt::format("{}", n.fvalue);
    case DType::Int: return fmt::format("{}", n.ivalue);
    case DType::Bool: return n.ivalue ? "true" : "false";
  }
  return "?";
}

}  // namespace

std::string at_loc(const std::string& what, const std::string& loc) {
  return loc.empty() ? what : fmt::format("{} (at {})", what, loc);
}

const OpInfo& op_info(Op op) { return kOps[static_cast<int>(op)]; }

bool op_from_name(std::string_view name, Op* op) {
  for (int i = 0; i < kNumOps; ++i) {
    if (name == kOps[i].name) {
      *op = static_cast<Op>(i);
      return true;
    }
  }
  return false;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::Bool: return "bool";
    case DType::Int: return "int";
    case DType::Float: return "float";
  }
  return "?";
}

const char* param_name(Param p) { return kParams[static_cast<int>(p)]; }

DType param_type(Param p) { return p == Param::Score || p == Param::Stat ? DType::Float : DType::Int; }

bool param_from_name(std::string_view name, Param* p) {
  for (int i = 0; i < kNumParams; ++i) {
    if (name == kParams[i]) {
      *p = static_cast<Param>(i);
      return true;
    }
  }
  return false;
}

const char* normalize_name(Normalize n) {
  switch (n) {
    case Normalize::Softmax: return "softmax";
    case Normalize::None: return "none";
    case Normalize::Custom: return "custom";
  }
  return "?";
}

Graph Graph::header() const {
  Graph r;
  r.buffers = buffers;
  r.normalize = normalize;
  r.log_domain = log_domain;
  r.detach_stats = detach_stats;
  return r;
}

int Graph::add(Node n) {
  nodes.push_back(std::move(n));
  return static_cast<int>(nodes.size()) - 1;
}

int Graph::add_const(DType type, double value) {
  Node n;
  n.op = Op::Const;
  n.type = type;
  if (type == DType::Float) n.fvalue = value;
  else n.ivalue = static_cast<int64_t>(value);
  return add(std::move(n));
}

int Graph::add_param(Param p) {
  Node n;
  n.op = Op::Param;
  n.type = param_type(p);
  n.index = static_cast<int>(p);
  return add(std::move(n));
}

int Graph::output(std::string_view name) const {
  const Output* o = find_output(name);
  return o ? o->node : -1;
}

const Output* Graph::find_output(std::string_view name) const {
  for (const Output& o : outputs)
    if (o.name == name) return &o;
  return nullptr;
}

std::string Graph::text(bool details) const {
  std::string s;
  auto out = std::back_inserter(s);
  fmt::format_to(out, "graph normalize={}{}{}\n", normalize_name(normalize),
                 log_domain ? " log_domain" : "", detach_stats ? " detach_stats" : "");
  for (size_t i = 0; i < buffers.size(); ++i) {
    const Buffer& b = buffers[i];
    fmt::format_to(out, "buffer ${}: {} rank {}", i, dtype_name(b.type), b.shape.size());
    if (details) {
      std::string shape;
      for (size_t d = 0; d < b.shape.size(); ++d)
        shape += fmt::format("{}{}", d ? "," : "", b.shape[d]);
      fmt::format_to(out, " {}[{}] \"{}\"{}", b.torch_dtype, shape, b.name,
                     b.requires_grad ? " requires_grad" : "");
    }
    s += '\n';
  }
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    fmt::format_to(out, "%{} = {}", i, op_info(n.op).name);
    if (n.op == Op::Param) fmt::format_to(out, " {}", param_name(static_cast<Param>(n.index)));
    if (n.op == Op::Const) fmt::format_to(out, " {}", const_text(n));
    if (n.op == Op::Load) fmt::format_to(out, " ${}[", n.index);
    for (size_t a = 0; a < n.args.size(); ++a)
      fmt::format_to(out, "{}%{}", a ? ", " : " ", n.args[a]);
    if (n.op == Op::Load) s += n.args.empty() ? "]" : " ]";
    fmt::format_to(out, " : {}", dtype_name(n.type));
    if (details && !n.loc.empty()) fmt::format_to(out, "    # {}", n.loc);
    s += '\n';
  }
  for (const Output& o : outputs) {
    if (o.load >= 0) fmt::format_to(out, "out {}(%{}) = %{}\n", o.name, o.load, o.node);
    else fmt::format_to(out, "out {} = %{}\n", o.name, o.node);
  }
  return s;
}

std::string Graph::hash() const {
  std::string t = text(false);
  return fmt::format("{:016x}", XXH3_64bits(t.data(), t.size()));
}

}  // namespace ae::ir
