#include "torch/workspaces.h"

#include <fmt/format.h>

#include <map>
#include <mutex>

#include "torch/runner_inputs.h"

namespace ae::torch_ops {
namespace {

std::mutex g_mutex;
std::map<std::string, at::Tensor>& kept() {
  static auto* m = new std::map<std::string, at::Tensor>();
  return *m;
}

}  // namespace

std::vector<at::Tensor> bind_workspaces(const plan::LaunchPlan& plan, const at::Tensor& like,
                                        runner::Bindings& b) {
  std::vector<at::Tensor> out;
  for (const plan::Workspace& w : plan.workspaces) {
    const int slot = static_cast<int>(w.id);
    const at::ScalarType dtype = w.dtype == plan::ElemType::Float32 ? at::kFloat : at::kByte;
    const std::string key =
        w.cache_key.empty() ? "" : fmt::format("{}|{}", w.cache_key, like.device().index());
    at::Tensor t;
    if (!key.empty()) {
      std::lock_guard<std::mutex> lock(g_mutex);
      auto it = kept().find(key);
      if (it != kept().end()) t = it->second, b.ready[slot] = true;
    }
    if (!t.defined()) {
      t = at::empty(w.shape, like.options().dtype(dtype));
      if (!key.empty()) {  // filled by its step in this call, before any later call reads it
        std::lock_guard<std::mutex> lock(g_mutex);
        if (kept().size() > 64) kept().clear();
        kept().emplace(key, t);
      }
    }
    b.workspaces[slot] = ref(t);
    out.push_back(t);
  }
  return out;
}

void clear_workspace_cache() {
  std::lock_guard<std::mutex> lock(g_mutex);
  kept().clear();
}

}  // namespace ae::torch_ops
