#include "ir/parse.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "ir/error.h"
#include "ir/typecheck.h"
#include "nlohmann/json.hpp"

namespace ae::ir {
namespace {

using json = nlohmann::json;

double float_value(const json& v) {
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) {  // JSON has no inf / nan: the tracer writes them as strings
    const std::string s = v.get<std::string>();
    if (s == "inf") return std::numeric_limits<double>::infinity();
    if (s == "-inf") return -std::numeric_limits<double>::infinity();
    if (s == "nan") return std::numeric_limits<double>::quiet_NaN();
  }
  throw GraphError(fmt::format("bad float constant {}", v.dump()));
}

// A constant the graph cannot hold; parse_trace names the line of the node that uses it.
struct BadConstant {
  std::string what;
};

// Kernels compute integers (indices) in 32-bit ints: a constant must fit, or a kernel and the
// reference executor (int64) would compute different things (2**64 used to wrap to 0).
int64_t int_value(const json& v) {
  if (!v.is_number_integer())
    throw BadConstant{fmt::format("integer constant {} is not an integer", v.dump())};
  const bool fits = v.is_number_unsigned() ? v.get<uint64_t>() <= uint64_t(INT32_MAX)
                                           : v.get<int64_t>() >= INT32_MIN &&
                                                 v.get<int64_t>() <= INT32_MAX;
  if (!fits)
    throw BadConstant{fmt::format("integer constant {} does not fit in 32 bits (kernels "
                                  "compute integers in 32-bit ints)", v.dump())};
  return v.get<int64_t>();
}

// The source line of the first node that uses node `id` (constants carry none).
std::string user_loc(const json& nodes, size_t id) {
  for (size_t k = id + 1; k < nodes.size(); ++k) {
    if (!nodes[k].contains("args")) continue;
    for (const json& a : nodes[k].at("args"))
      if (a.is_number_integer() && a.get<int64_t>() == static_cast<int64_t>(id))
        return nodes[k].value("loc", "");
  }
  return "";
}

DType type_from_name(const std::string& s, const std::string& loc) {
  if (s == "float") return DType::Float;
  if (s == "int") return DType::Int;
  if (s == "bool") return DType::Bool;
  throw GraphError(at_loc(fmt::format("unknown type '{}'", s), loc));
}

Node parse_node(const json& j, size_t id) {
  Node n;
  n.loc = j.value("loc", "");
  const std::string op = j.at("op").get<std::string>();
  if (!op_from_name(op, &n.op))
    throw GraphError(at_loc(fmt::format("unsupported op '{}' (node %{})", op, id), n.loc));
  if (j.contains("args")) n.args = j.at("args").get<std::vector<int>>();
  switch (n.op) {
    case Op::Param: {
      Param p;
      const std::string name = j.at("name").get<std::string>();
      if (!param_from_name(name, &p))
        throw GraphError(at_loc(fmt::format("unknown parameter '{}'", name), n.loc));
      n.index = static_cast<int>(p);
      n.type = param_type(p);
      break;
    }
    case Op::Const:
      n.type = type_from_name(j.at("dtype").get<std::string>(), n.loc);
      if (n.type == DType::Float) n.fvalue = float_value(j.at("value"));
      else if (n.type == DType::Bool) n.ivalue = j.at("value").get<bool>() ? 1 : 0;
      else n.ivalue = int_value(j.at("value"));
      break;
    case Op::Load:
      n.index = j.at("buffer").get<int>();
      break;
    case Op::Cast:
      n.type = type_from_name(j.at("dtype").get<std::string>(), n.loc);
      break;
    default:
      break;
  }
  return n;
}

// A log-domain normalization without a finish function (and with its gradient through the
// statistic) is softmax of its log-weight: the score becomes the weight and the built-in
// softmax (its kernels) runs it, exactly the same math. A temperature is such a case.
void lower_plain_softmax(Graph& g) {
  if (g.normalize != Normalize::Custom || !g.log_domain || g.detach_stats ||
      g.find_output("finish") || g.find_output("stat"))
    return;
  const Output* weight = g.find_output("weight");
  if (!weight) return;
  const int node = weight->node;
  std::vector<Output> kept;
  for (const Output& o : g.outputs)
    if (o.name != "weight" && o.name != "score") kept.push_back(o);
  kept.push_back(Output{"score", node, -1});
  g.outputs = std::move(kept);
  g.normalize = Normalize::Softmax;
  g.log_domain = false;
}

}  // namespace

bool dtype_from_torch(const std::string& s, DType* t) {
  if (s == "float16" || s == "bfloat16" || s == "float32" || s == "float64") *t = DType::Float;
  else if (s == "int8" || s == "int16" || s == "int32" || s == "int64" || s == "uint8") *t = DType::Int;
  else if (s == "bool") *t = DType::Bool;
  else return false;
  return true;
}

Graph parse_trace(const std::string& json_text) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    throw GraphError(fmt::format("trace is not valid JSON: {}", e.what()));
  }
  Graph g;
  try {
    if (j.value("version", 0) != 1)
      throw GraphError(fmt::format("unsupported trace version {}", j.value("version", 0)));
    const std::string norm = j.value("normalize", "softmax");
    if (norm == "softmax") g.normalize = Normalize::Softmax;
    else if (norm == "none") g.normalize = Normalize::None;
    else if (norm == "custom") g.normalize = Normalize::Custom;
    else throw GraphError(fmt::format("unknown normalize '{}' (softmax, none or custom)", norm));
    g.log_domain = j.value("log_domain", false);
    g.detach_stats = j.value("detach_stats", false);
    if (g.normalize != Normalize::Custom && (g.log_domain || g.detach_stats))
      throw GraphError("log_domain and detach_stats belong to a custom normalization");
    for (const json& b : j.value("buffers", json::array())) {
      Buffer buf;
      buf.name = b.at("name").get<std::string>();
      buf.torch_dtype = b.at("dtype").get<std::string>();
      if (!dtype_from_torch(buf.torch_dtype, &buf.type))
        throw GraphError(fmt::format("captured tensor '{}' has unsupported dtype {}", buf.name,
                                     buf.torch_dtype));
      buf.shape = b.at("shape").get<std::vector<int64_t>>();
      buf.requires_grad = b.value("requires_grad", false);
      g.buffers.push_back(std::move(buf));
    }
    const json& nodes = j.at("nodes");
    for (size_t i = 0; i < nodes.size(); ++i) {
      try {
        g.nodes.push_back(parse_node(nodes[i], i));
      } catch (const BadConstant& e) {
        const std::string loc = nodes[i].value("loc", "");
        throw GraphError(at_loc(e.what, loc.empty() ? user_loc(nodes, i) : loc));
      }
    }
    const json outputs = j.value("outputs", json::object());
    for (const auto& [name, id] : outputs.items()) {
      const bool norm_output = name == "weight" || name == "stat" || name == "finish";
      if (name != "score" && name != "mask" && !norm_output)
        throw GraphError(fmt::format("unknown output '{}' (score, mask, weight, stat, finish)",
                                     name));
      if (norm_output && g.normalize != Normalize::Custom)
        throw GraphError(fmt::format("output '{}' needs normalize 'custom'", name));
      g.outputs.push_back(Output{name, id.get<int>(), -1});
    }
  } catch (const json::exception& e) {
    throw GraphError(fmt::format("malformed trace: {}", e.what()));
  }
  // Without a score_mod the score passes through: every graph has a "score" output.
  if (std::none_of(g.outputs.begin(), g.outputs.end(),
                   [](const Output& o) { return o.name == "score"; }))
    g.outputs.push_back(Output{"score", g.add_param(Param::Score), -1});
  if (g.normalize == Normalize::Custom && !g.find_output("weight"))
    throw GraphError("a custom normalization needs a weight function");
  if (g.log_domain && g.find_output("stat"))
    throw GraphError("a log-domain normalization sums its weights: it takes no stat function");
  infer_types(g);
  check_outputs(g);
  lower_plain_softmax(g);
  // score before mask, whatever the JSON's key order
  std::stable_sort(g.outputs.begin(), g.outputs.end(),
                   [](const Output& a, const Output& b) { return a.name > b.name; });
  return g;
}

}  // namespace ae::ir
