// Python bindings of the autotuner: modes per variant, the progress callback, the stored
// choices (cache CLI), and the candidates of a problem on a device class (the compile-all
// check, `python -m attention_engine.tune --list`).
#include <fmt/format.h>
#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>

#include "ir/error.h"
#include "plan/planner.h"
#include "torch/autotune.h"
#include "torch/bindings.h"
#include "torch/checks.h"
#include "tune/candidates.h"
#include "tune/lookup.h"
#include "tune/shape_class.h"
#include "tune/store.h"

namespace ae::py {
namespace {

namespace pyb = pybind11;

pyb::dict choice_dict(const tune::StoredChoice& c) {
  pyb::dict d;
  d["key"] = c.key;
  d["choice"] = c.choice.text();
  d["describe"] = c.describe;
  d["ms"] = c.ms;
  d["table_ms"] = c.table_ms;
  d["candidates"] = c.candidates;
  d["timed"] = c.timed;
  d["seconds"] = c.seconds;
  d["created"] = c.created;
  return d;
}

tune::ChoiceStore store_at(const std::optional<std::string>& cache_dir) {
  return tune::ChoiceStore(cache_dir ? *cache_dir + "/tuning" : tune::default_store().dir());
}

// A problem as the tuner's bindings take it: a dict of shape fields (kind "fwd" or "bwd",
// batch, q_heads, kv_heads, q_len, kv_len, d_qk, d_v, bf16, buffer_dtypes, buffer_grads,
// deterministic) on a device class.
plan::PlanRequest request_of(const std::string& variant_key, const pyb::dict& d, const std::string& device) {
  plan::PlanRequest r;
  r.variant = plan::VariantTraits::of(*torch_ops::get_variant(variant_key));
  auto get = [&](const char* name, int64_t dflt) {
    return d.contains(name) ? d[name].cast<int64_t>() : dflt;
  };
  for (auto item : d) {
    static const char* const known[] = {"kind", "batch", "q_heads", "kv_heads", "q_len", "kv_len", "d_qk",
                                        "d_v", "bf16", "buffer_dtypes", "buffer_grads", "deterministic"};
    const std::string name = item.first.cast<std::string>();
    if (std::find(std::begin(known), std::end(known), name) == std::end(known))
      throw pyb::value_error("unknown problem field '" + name + "'");
  }
  const std::string kind = d.contains("kind") ? d["kind"].cast<std::string>() : "fwd";
  if (kind != "fwd" && kind != "bwd") throw pyb::value_error("kind must be fwd or bwd, not " + kind);
  plan::Problem& p = r.problem;
  p.kind = kind == "fwd" ? plan::OpKind::Forward : plan::OpKind::Backward;
  p.dtype = !d.contains("bf16") || d["bf16"].cast<bool>() ? plan::ElemType::BFloat16 : plan::ElemType::Float16;
  p.batch = get("batch", 1), p.q_heads = get("q_heads", 16), p.kv_heads = get("kv_heads", p.q_heads);
  p.q_len = get("q_len", 4096), p.kv_len = get("kv_len", p.q_len);
  p.d_qk = get("d_qk", 128), p.d_v = get("d_v", p.d_qk);
  if (p.batch < 1 || p.q_heads < 1 || p.kv_heads < 1 || p.q_heads % p.kv_heads || p.q_len < 1 || p.kv_len < 1)
    throw pyb::value_error(fmt::format("bad problem: batch {} heads {}/{} lengths {}/{}", p.batch,
                                       p.q_heads, p.kv_heads, p.q_len, p.kv_len));
  p.scale = 1.0;
  p.deterministic = d.contains("deterministic") && d["deterministic"].cast<bool>();
  const auto dtypes = d.contains("buffer_dtypes") ? d["buffer_dtypes"].cast<std::vector<std::string>>()
                                                  : std::vector<std::string>{};
  const auto grads = d.contains("buffer_grads") ? d["buffer_grads"].cast<std::vector<bool>>()
                                                : std::vector<bool>{};
  const ir::Variant& v = *torch_ops::get_variant(variant_key);
  for (size_t i = 0; i < dtypes.size(); ++i) {
    plan::CapturedTensor t{dtypes[i], 1, i < grads.size() && grads[i] && kind == "bwd"};
    if (i < v.forward.buffers.size()) {
      t.rank = static_cast<int>(v.forward.buffers[i].shape.size());
      t.numel = 1;
      for (int64_t n : v.forward.buffers[i].shape) t.numel *= n;
    }
    p.captured.push_back(t);
  }
  p = plan::with_sparsity(p, r.variant);
  if (!plan::devices::named(device, &r.device))
    throw pyb::value_error("device must be h100, h200, a100, ada or mi250, not " + device);
  return r;
}

pyb::list candidate_list(const std::string& key, const pyb::dict& problem, const std::string& device,
                         bool compile, int threads, const std::vector<int>& only) {
  const plan::PlanRequest r = request_of(key, problem, device);
  const std::vector<tune::Candidate> cands = tune::candidates(r);
  std::vector<tune::CompileReport> reports(cands.size());
  if (compile) {
    std::vector<size_t> picked;  // which to compile: `only`, or all
    for (size_t i = 0; i < cands.size(); ++i)
      if (only.empty() || std::find(only.begin(), only.end(), static_cast<int>(i)) != only.end())
        picked.push_back(i);
    std::vector<tune::Candidate> some;
    for (size_t i : picked) some.push_back(cands[i]);
    pyb::gil_scoped_release release;
    std::vector<tune::CompileReport> got = tune::compile_all(
        some, *torch_ops::get_variant(key), r.device, threads, tune::Clock::time_point::max());
    for (size_t j = 0; j < picked.size(); ++j) reports[picked[j]] = got[j];
  }
  pyb::list out;
  for (size_t i = 0; i < cands.size(); ++i) {
    pyb::dict d;
    d["choice"] = cands[i].choice.text();
    const plan::Step* s = cands[i].main_step();
    d["describe"] = s ? s->spec.describe() : "";
    d["smem"] = s ? s->smem : 0;
    d["threads"] = s ? s->threads : 0;
    d["plan"] = cands[i].plan.describe();
    d["kv_splits"] = cands[i].plan.attn.kv_splits;
    if (compile) {
      d["compiled"] = reports[i].compiled;
      d["eligible"] = reports[i].eligible;
      d["why"] = reports[i].why;
      d["registers"] = reports[i].figures.registers;
      d["spill_stores"] = reports[i].figures.spill_stores;
      d["spill_loads"] = reports[i].figures.spill_loads;
    }
    out.append(d);
  }
  return out;
}

}  // namespace

void bind_tune(pyb::module_& m) {
  m.def("tune_set_mode", [](const std::string& key, const std::string& mode) {
    try {
      torch_ops::set_tune_mode(key, torch_ops::parse_tune_mode(mode));
    } catch (const std::invalid_argument& e) {
      throw pyb::value_error(e.what());
    }
  }, pyb::arg("variant_key"), pyb::arg("mode"), "Autotuning for a variant: on, off or cached.");
  m.def("tune_mode", [](const std::string& key) {
    try {
      switch (torch_ops::tune_mode(key)) {
        case torch_ops::TuneMode::Off: return "off";
        case torch_ops::TuneMode::Cached: return "cached";
        case torch_ops::TuneMode::On: return "on";
      }
    } catch (const std::invalid_argument& e) {
      throw pyb::value_error(e.what());
    }
    return "off";
  }, pyb::arg("variant_key"), "The mode a call of the variant tunes with (AE_AUTOTUNE wins).");
  m.def("tune_set_progress", [](const std::optional<pyb::function>& fn) {
    if (!fn) return torch_ops::set_tune_progress({});
    // Never destroyed: a Python object must not be released at exit without the GIL.
    auto* keep = new pyb::function(*fn);
    torch_ops::set_tune_progress([keep](const tune::Progress& p) {
      pyb::gil_scoped_acquire gil;
      try {
        (*keep)(p.what, p.stage, p.done, p.total, p.finished, p.result);
      } catch (const pyb::error_already_set& e) {
        PyErr_Clear();  // a broken progress bar never stops a tuning
      }
    });
  }, pyb::arg("callback"),
     "callback(what, stage, done, total, finished, result) for tuning progress; None: none.");
  // A call waiting for another thread's tuning must not hold the GIL (that thread's progress
  // reports take it).
  torch_ops::set_tune_waiter([](const std::function<void()>& wait) {
    if (Py_IsInitialized() && PyGILState_Check()) {
      pyb::gil_scoped_release release;
      wait();
    } else {
      wait();
    }
  });
  m.def("tune_store_dir", [] { return tune::default_store().dir(); },
        "The folder of this process's tuning choices ('': memory only).");
  m.def("tune_list", [](const std::optional<std::string>& cache_dir) {
    pyb::list out;
    for (const tune::StoredChoice& c : store_at(cache_dir).list()) out.append(choice_dict(c));
    return out;
  }, pyb::arg("cache_dir") = pyb::none(), "The stored choices (of a kernel cache folder).");
  m.def("tune_clear", [](const std::optional<std::string>& cache_dir) {
    if (!cache_dir) return tune::default_store().clear();
    return store_at(cache_dir).clear();
  }, pyb::arg("cache_dir") = pyb::none(), "Removes the stored choices; returns how many files.");
  m.def("tune_forget", [] { tune::default_store().forget_memory(); },
        "Drops this process's memory of stored choices (the files stay).");
  m.def("tune_put", [](const pyb::dict& d, const std::optional<std::string>& cache_dir) {
    tune::StoredChoice c;
    c.key = d["key"].cast<std::string>();
    try {
      c.choice = tune::Choice::parse(d.contains("choice") ? d["choice"].cast<std::string>() : "");
    } catch (const std::invalid_argument& e) {
      throw pyb::value_error(e.what());
    }
    c.describe = d.contains("describe") ? d["describe"].cast<std::string>() : "";
    c.ms = d.contains("ms") ? d["ms"].cast<double>() : 0.0;
    c.table_ms = d.contains("table_ms") ? d["table_ms"].cast<double>() : 0.0;
    if (!cache_dir) return tune::default_store().put(c);
    tune::ChoiceStore s = store_at(cache_dir);
    s.put(c);
  }, pyb::arg("choice"), pyb::arg("cache_dir") = pyb::none(),
     "Stores a choice (a dict: key, choice text, ...): for tests and table imports.");
  m.def("tune_find", [](const std::string& key) -> std::optional<pyb::dict> {
    auto c = tune::default_store().find(key);
    if (!c) return std::nullopt;
    return choice_dict(*c);
  }, pyb::arg("key"), "The stored choice of a shape-class key (memory, else its file once).");
  m.def("tune_lookup_ns", [](const std::string& key, int n) {
    // The hot path's cost: n lookups of one key, in nanoseconds each.
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) (void)tune::default_store().find(key);
    return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / n;
  }, pyb::arg("key"), pyb::arg("n") = 10000);
  m.def("tune_hot_path_ns", [](const std::string& key, const pyb::dict& problem, const std::string& device, int n) {
    // What a call with autotuning on adds before planning: key, lookup, overrides (ns each).
    plan::PlanRequest r = request_of(key, problem, device);
    r.overrides = plan::TuningOverrides::from_environment();
    const tune::DeviceIdentity id{"NVIDIA H200", r.device.multiprocessors, 13000};
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) (void)tune::lookup(tune::default_store(), r, id);
    return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / n;
  }, pyb::arg("variant_key"), pyb::arg("problem"), pyb::arg("device") = "h200", pyb::arg("n") = 10000);
  m.def("tune_shape_key", [](const std::string& key, const pyb::dict& problem, const std::string& device,
                             const std::string& gpu_name, int driver) {
    const plan::PlanRequest r = request_of(key, problem, device);
    return tune::shape_class_key(r, {gpu_name, r.device.multiprocessors, driver});
  }, pyb::arg("variant_key"), pyb::arg("problem"), pyb::arg("device") = "h100",
     pyb::arg("gpu_name") = "NVIDIA H100", pyb::arg("driver") = 13000,
     "The shape-class key a call of this problem is stored under.");
  m.def("tune_candidates", &candidate_list, pyb::arg("variant_key"), pyb::arg("problem"),
        pyb::arg("device") = "h100", pyb::arg("compile") = false, pyb::arg("threads") = 0,
        pyb::arg("only") = std::vector<int>{},
        "The tuner's candidates for a problem on a device class, the table's first; compile=True "
        "also compiles each main kernel (a thread pool over NVRTC; only: these indices) and says "
        "which can win.");
}

}  // namespace ae::py
