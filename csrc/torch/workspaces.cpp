#include "torch/workspaces.h"

#include <fmt/format.h>

#include <map>
#include <mutex>

#include "torch/runner_inputs.h"

namespace ae::torch_ops {
namespace {

// A kept workspace, and the captured tensors its key names (held so that their memory, and
// with it their key, cannot pass to another tensor while the entry lives).
struct Kept {
  at::Tensor table;
  std::vector<at::Tensor> pinned;
};

std::mutex g_mutex;
std::map<std::string, Kept>& kept() {
  static auto* m = new std::map<std::string, Kept>();
  return *m;
}

// The captured tensors' identities (but tensor `ignored`'s): data pointer, sizes, strides,
// version counter.
std::string captured_identity(const std::vector<at::Tensor>& captured, int ignored) {
  std::string out;
  for (size_t i = 0; i < captured.size(); ++i) {
    const at::Tensor& t = captured[i];
    if (static_cast<int>(i) == ignored) {
      out += "|-";
      continue;
    }
    out += fmt::format("|{}v{}", t.data_ptr(), t._version());
    for (int64_t d = 0; d < t.dim(); ++d) out += fmt::format(",{}:{}", t.size(d), t.stride(d));
  }
  return out;
}

}  // namespace

std::vector<at::Tensor> bind_workspaces(const plan::LaunchPlan& plan, const at::Tensor& like,
                                        runner::Bindings& b,
                                        const std::vector<at::Tensor>& captured) {
  std::vector<at::Tensor> out;
  for (const plan::Workspace& w : plan.workspaces) {
    const int slot = static_cast<int>(w.id);
    const at::ScalarType dtype = w.dtype == plan::ElemType::Float32 ? at::kFloat
                                 : w.dtype == plan::ElemType::Int32 ? at::kInt
                                                                    : at::kByte;
    std::string key;
    if (!w.cache_key.empty())
      key = fmt::format("{}|{}{}", w.cache_key, like.device().index(),
                        w.key_by_captured ? captured_identity(captured, w.key_ignores_captured) : "");
    at::Tensor t;
    if (!key.empty()) {
      std::lock_guard<std::mutex> lock(g_mutex);
      auto it = kept().find(key);
      if (it != kept().end()) t = it->second.table, b.ready[slot] = true;
    }
    if (!t.defined()) {
      t = w.zeroed ? at::zeros(w.shape, like.options().dtype(dtype))
                   : at::empty(w.shape, like.options().dtype(dtype));
      if (!key.empty()) {  // filled by its step in this call, before any later call reads it
        std::lock_guard<std::mutex> lock(g_mutex);
        if (kept().size() > 64) kept().clear();
        std::vector<at::Tensor> pinned;
        if (w.key_by_captured)
          for (size_t i = 0; i < captured.size(); ++i)
            if (static_cast<int>(i) != w.key_ignores_captured) pinned.push_back(captured[i]);
        kept().emplace(key, Kept{t, pinned});
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
