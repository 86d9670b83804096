#include "torch/autotune.h"

#include <c10/core/Event.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <stdexcept>
#include <unordered_map>
#include <utility>

#include "jit/cuda_driver.h"
#include "jit/kernel_cache.h"
#include "runner/device_caps_cuda.h"
#include "torch/workspaces.h"
#include "tune/candidates.h"
#include "tune/lookup.h"
#include "tune/shape_class.h"
#include "tune/store.h"

namespace ae::torch_ops {
namespace {

std::mutex g_modes_mutex;
std::unordered_map<std::string, TuneMode>& modes() {
  static auto* m = new std::unordered_map<std::string, TuneMode>();
  return *m;
}

std::mutex g_progress_mutex;
tune::ProgressFn& progress_fn() {
  static auto* f = new tune::ProgressFn([](const tune::Progress& p) {
    if (p.finished) std::fprintf(stderr, "attention_engine: tuned %s: %s\n", p.what.c_str(), p.result.c_str());
  });
  return *f;
}

void report(const tune::Progress& p) {
  tune::ProgressFn f;
  {
    std::lock_guard<std::mutex> lock(g_progress_mutex);
    f = progress_fn();
  }
  try {
    if (f) f(p);
  } catch (...) {  // a progress bar never stops a tuning
  }
}

const tune::DeviceIdentity& identity(int device) {
  static std::array<tune::DeviceIdentity, jit::kMaxDevices> ids;
  static std::array<std::once_flag, jit::kMaxDevices> once;
  std::call_once(once.at(device), [device] {
    tune::DeviceIdentity& id = ids[device];
    id.name = jit::cuda_device_name(device);
    id.multiprocessors = jit::cuda_device_info(device).multiprocessors;
    jit::cuda_driver().DriverGetVersion(&id.driver);
  });
  return ids[device];
}

// Median milliseconds of the plan on b's stream: one untimed run (it also loads the kernels of
// the other steps), then batches of runs back to back, each between two events, until at least
// 5 runs and 20 ms of them (at most 50 runs). Workspaces are bound (allocated, zeroed where the
// plan says) before each run's first event.
double time_plan(const plan::LaunchPlan& plan, const ir::Variant& v, runner::Bindings b,
                 const at::Tensor& like, const std::vector<at::Tensor>& buffers) {
  const c10::impl::DeviceGuardImplInterface* impl = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA);
  const c10::Stream stream = impl->getStream(like.device());
  auto once = [&](c10::Event* start, c10::Event* end) {
    const std::vector<at::Tensor> scratch = bind_workspaces(plan, like, b, buffers);
    if (start) start->record(stream);
    runner::run(plan, v, b);
    if (end) end->record(stream);
  };
  once(nullptr, nullptr);
  std::vector<double> ms;
  double total = 0;
  for (size_t batch = 5; batch > 0;) {
    std::vector<std::pair<c10::Event, c10::Event>> events;
    events.reserve(batch);
    for (size_t i = 0; i < batch; ++i) {
      events.emplace_back(c10::Event(c10::DeviceType::CUDA, c10::EventFlag::BACKEND_DEFAULT),
                          c10::Event(c10::DeviceType::CUDA, c10::EventFlag::BACKEND_DEFAULT));
      once(&events.back().first, &events.back().second);
    }
    events.back().second.synchronize();
    for (const auto& [start, end] : events) {
      ms.push_back(start.elapsedTime(end));
      total += ms.back();
    }
    // Enough runs for about 20 ms in all, at most 50.
    const double each = total / static_cast<double>(ms.size());
    const double want = each > 0 ? (20.0 - total) / each : 0.0;
    batch = total >= 20.0 || ms.size() >= 50 ? 0 : static_cast<size_t>(std::clamp(want, 1.0, 50.0 - ms.size()));
  }
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return ms[ms.size() / 2];
}

std::string short_what(const plan::PlanRequest& r) {
  const plan::Problem& p = r.problem;
  return fmt::format("{} {} d{}x{} q{} k{} bh{} g{} ({})", p.kind == plan::OpKind::Forward ? "fwd" : "bwd",
                     plan::elem_name(p.dtype), p.d_qk, p.d_v, tune::pow2_bucket(p.q_len),
                     tune::pow2_bucket(p.kv_len), tune::pow2_bucket(p.batch * p.q_heads), p.group(),
                     r.variant.key.substr(0, 8));
}

double budget_seconds() {
  const char* b = std::getenv("AE_TUNE_BUDGET");
  if (!b || !*b) return 7.5;
  char* end = nullptr;
  const double s = std::strtod(b, &end);
  if (end == b || *end || !(s > 0))
    throw std::invalid_argument(fmt::format("AE_TUNE_BUDGET={}: a number of seconds > 0", b));
  return s;
}

// Tunings run one at a time: timings beside another tuning's would measure both.
std::mutex g_tuning_mutex;

std::function<void(const std::function<void()>&)>& waiter() {
  static auto* w = new std::function<void(const std::function<void()>&)>();
  return *w;
}

}  // namespace

TuneMode parse_tune_mode(const std::string& t) {
  if (t == "off" || t == "0" || t == "false") return TuneMode::Off;
  if (t == "on" || t == "1" || t == "true") return TuneMode::On;
  if (t == "cached") return TuneMode::Cached;
  throw std::invalid_argument("autotune mode must be on, off or cached (AE_AUTOTUNE: 1, 0 or "
                              "cached), not '" + t + "'");
}

void set_tune_mode(const std::string& key, TuneMode mode) {
  std::lock_guard<std::mutex> lock(g_modes_mutex);
  modes()[key] = mode;
}

TuneMode tune_mode(const std::string& key) {
  if (const char* e = std::getenv("AE_AUTOTUNE"); e && *e) return parse_tune_mode(e);
  std::lock_guard<std::mutex> lock(g_modes_mutex);
  auto it = modes().find(key);
  return it == modes().end() ? TuneMode::Off : it->second;
}

void set_tune_waiter(std::function<void(const std::function<void()>&)> wait) {
  std::lock_guard<std::mutex> lock(g_progress_mutex);
  waiter() = std::move(wait);
}

void set_tune_progress(tune::ProgressFn fn) {
  std::lock_guard<std::mutex> lock(g_progress_mutex);
  progress_fn() = std::move(fn);
}

TunedPlan plan_with_tuning(plan::PlanRequest r, int device, const std::string& mode_key) {
  TunedPlan t;
  // Not on AMD yet: the tuner's identity and timing go through the CUDA driver, and its
  // candidates are the NVIDIA families' knobs.
  const TuneMode mode = r.device.vendor == jit::Vendor::kAmd
                            ? TuneMode::Off
                            : tune_mode(mode_key.empty() ? r.variant.key : mode_key);
  r.overrides = plan::TuningOverrides::from_environment();
  if (mode != TuneMode::Off) {
    tune::Lookup l = tune::lookup(tune::default_store(), r, identity(device));
    t.key = std::move(l.key);
    if (l.found) {
      plan::PlanRequest chosen = r;
      chosen.overrides = l.overrides;
      if (plan::LaunchPlan p = plan::make_plan(chosen); p.ok) {
        t.plan = std::move(p);
        t.request = std::move(chosen);
        return t;
      }  // a choice the planner no longer takes (other AE_* set): the tables
    }
    t.tune_now = !l.found && mode == TuneMode::On;
  }
  t.plan = plan::make_plan(r);
  t.tune_now = t.tune_now && t.plan.ok && !t.plan.steps.empty();
  t.request = std::move(r);
  return t;
}

plan::LaunchPlan tune_call(const TunedPlan& t, const ir::Variant& v, const runner::Bindings& b,
                           const at::Tensor& like, const std::vector<at::Tensor>& buffers) {
  if (jit::cuda_stream_capturing(b.stream)) return t.plan;  // no synchronizing in a capture
  std::unique_lock<std::mutex> lock(g_tuning_mutex, std::try_to_lock);
  if (!lock.owns_lock()) {  // another thread is tuning
    std::function<void(const std::function<void()>&)> wait;
    {
      std::lock_guard<std::mutex> g(g_progress_mutex);
      wait = waiter();
    }
    if (wait) wait([&] { lock.lock(); });
    else lock.lock();
  }
  if (auto found = tune::default_store().find(t.key)) {  // tuned meanwhile by another thread
    plan::PlanRequest r = t.request;
    r.overrides = tune::overrides_with(found->choice);
    plan::LaunchPlan p = plan::make_plan(r);
    return p.ok ? p : t.plan;
  }
  const std::vector<tune::Candidate> cands = tune::candidates(t.request);
  if (cands.empty()) return t.plan;
  tune::TuneOptions o;
  o.budget_s = budget_seconds();
  o.what = short_what(t.request);
  o.progress = report;
  auto timer = [&](const tune::Candidate& c) { return time_plan(c.plan, v, b, like, buffers); };
  const tune::TuneResult r = tune::tune(cands, v, t.request.device, timer, o);
  const tune::Candidate& best = cands[r.chosen];
  tune::StoredChoice s;
  s.key = t.key;
  s.choice = best.choice;
  s.describe = best.main_step() ? best.main_step()->spec.describe() : "";
  s.ms = r.ms[r.chosen];
  s.table_ms = r.ms[0];
  s.candidates = static_cast<int>(cands.size());
  s.timed = static_cast<int>(r.timed);
  s.seconds = r.seconds;
  s.created = static_cast<int64_t>(std::time(nullptr));
  if (s.ms > 0) tune::default_store().put(s);  // nothing timed (every launch failed): not stored
  tune::Progress done{o.what, "done", r.timed, r.timed, true};
  done.result = fmt::format("{}: {:.4f} ms (table {:.4f} ms), {} of {} timed in {:.1f} s",
                            s.choice.vars.empty() ? "the table's" : s.choice.text(), s.ms,
                            s.table_ms, r.timed, cands.size(), r.seconds);
  report(done);
  return best.plan;
}

}  // namespace ae::torch_ops
