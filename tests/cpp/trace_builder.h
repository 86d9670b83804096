// Builds trace JSON in tests the way python/attention_engine/trace.py writes it.
#pragma once

#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace ae::test {

class TraceBuilder {
 public:
  using json = nlohmann::json;
  int param(const std::string& name) { return push({{"op", "param"}, {"name", name}}); }
  int fconst(double v) { return push({{"op", "const"}, {"dtype", "float"}, {"value", v}}); }
  int iconst(int64_t v) { return push({{"op", "const"}, {"dtype", "int"}, {"value", v}}); }
  int bconst(bool v) { return push({{"op", "const"}, {"dtype", "bool"}, {"value", v}}); }
  int op(const std::string& name, std::vector<int> args, const std::string& loc = "") {
    json n = {{"op", name}, {"args", args}};
    if (!loc.empty()) n["loc"] = loc;
    return push(n);
  }
  int cast(const std::string& dtype, int x) {
    return push({{"op", "cast"}, {"dtype", dtype}, {"args", {x}}});
  }
  int load(int buffer, std::vector<int> idx, const std::string& loc = "") {
    json n = {{"op", "load"}, {"buffer", buffer}, {"args", idx}};
    if (!loc.empty()) n["loc"] = loc;
    return push(n);
  }
  int buffer(const std::string& name, const std::string& dtype, std::vector<int64_t> shape,
             bool requires_grad = false) {
    buffers_.push_back({{"name", name}, {"dtype", dtype}, {"shape", shape},
                        {"requires_grad", requires_grad}});
    return static_cast<int>(buffers_.size()) - 1;
  }
  TraceBuilder& score(int id) { outputs_["score"] = id; return *this; }
  TraceBuilder& mask(int id) { outputs_["mask"] = id; return *this; }
  TraceBuilder& normalize(const std::string& n) { normalize_ = n; return *this; }
  // A custom normalization's outputs ("weight", "stat", "finish") and flags ("log_domain").
  TraceBuilder& output(const std::string& name, int id) { outputs_[name] = id; return *this; }
  TraceBuilder& flag(const std::string& name, bool on = true) { flags_[name] = on; return *this; }
  std::string str() const {
    json j = {{"version", 1}, {"normalize", normalize_}, {"buffers", buffers_},
              {"nodes", nodes_}, {"outputs", outputs_}};
    for (const auto& [name, on] : flags_.items()) j[name] = on;
    return j.dump();
  }

 private:
  int push(json n) {
    nodes_.push_back(std::move(n));
    return static_cast<int>(nodes_.size()) - 1;
  }
  json nodes_ = json::array(), buffers_ = json::array(), outputs_ = json::object();
  json flags_ = json::object();
  std::string normalize_ = "softmax";
};

}  // namespace ae::test
