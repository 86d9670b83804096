#include "ir/variant.h"

#include <map>
#include <mutex>

#include "ir/length_bound.h"
#include "ir/parse.h"

namespace ae::ir {
namespace {

std::mutex g_mutex;
std::map<std::string, std::shared_ptr<const Variant>>& registry() {
  static auto* r = new std::map<std::string, std::shared_ptr<const Variant>>();
  return *r;
}

// The Variant of an optimized forward graph (the registered one where it exists).
std::shared_ptr<const Variant> build_from_graph(Graph forward) {
  auto v = std::make_shared<Variant>();
  v->forward = std::move(forward);
  v->key = v->forward.hash();
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = registry().find(v->key);
    if (it != registry().end()) return it->second;
  }
  v->backward = differentiate(v->forward);
  v->analysis = analyze(v->forward);
  if (const KvLengthBound bound = find_kv_length_bound(v->forward); bound.buffer >= 0) {
    v->kv_lengths_buffer = bound.buffer;
    v->without_kv_lengths = build_from_graph(without_kv_length_bound(v->forward, bound));
  }
  if (const BlockMaskLookup found = find_block_mask(v->forward); found.buffer >= 0) {
    v->block_mask = found;
    v->without_block_mask = build_from_graph(without_block_mask(v->forward, found));
  }
  std::lock_guard<std::mutex> lock(g_mutex);
  return registry().emplace(v->key, v).first->second;
}

}  // namespace

std::shared_ptr<const Variant> build_variant(const std::string& trace_json, Graph* display) {
  Graph forward = optimize(parse_trace(trace_json));
  if (display) *display = forward;
  return build_from_graph(std::move(forward));
}

std::shared_ptr<const Variant> find_variant(const std::string& key) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = registry().find(key);
  return it == registry().end() ? nullptr : it->second;
}

}  // namespace ae::ir
