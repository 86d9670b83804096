// The autotuner in the torch layer (the search, store and choice logic are torch-free, in
// csrc/tune): which calls tune, the stored choice a call plans with, and the timer (CUDA events
// on the call's stream around runner::run).
//
// Modes, per variant (ae.compile(autotune=...)) or for all (AE_AUTOTUNE, which wins when set):
//   off     the tables (the default; no lookup at all)
//   cached  a stored choice where there is one (from an earlier tuning or a sweep of
//           `python -m attention_engine.tune`), else the tables; never tunes
//   on      as cached, and a call whose shape class has no stored choice tunes it first
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <string>
#include <vector>

#include "ir/variant.h"
#include "plan/planner.h"
#include "runner/runner.h"
#include "tune/tuner.h"

namespace ae::torch_ops {

enum class TuneMode { Off, Cached, On };
// "off", "cached", "on" (also "0", "1"); throws std::invalid_argument otherwise.
TuneMode parse_tune_mode(const std::string& text);
void set_tune_mode(const std::string& variant_key, TuneMode mode);
TuneMode tune_mode(const std::string& variant_key);  // AE_AUTOTUNE if set, else the variant's

// Where progress reports go (default: a line on stderr). Python installs its bar.
void set_tune_progress(tune::ProgressFn fn);
// How a call waits for another thread's tuning: wait(f) runs f, the blocking wait. Python's
// releases the GIL around it, since the tuning thread's progress reports need the GIL.
void set_tune_waiter(std::function<void(const std::function<void()>&)> wait);

// A call's plan: the request planned with the stored choice of its shape class where the mode
// allows one; tune_now when the mode is on, no choice is stored and the plan has launches.
struct TunedPlan {
  plan::LaunchPlan plan;
  plan::PlanRequest request;  // as planned (its overrides: the environment's and the choice's)
  std::string key;            // the shape class ("" when the mode is off)
  bool tune_now = false;
};
// mode_key: the variant whose autotune mode applies (default: the request's); the forward of a
// variant without its length bound tunes as the variant the call named.
TunedPlan plan_with_tuning(plan::PlanRequest request, int device, const std::string& mode_key = "");

// Tunes the call's shape class on its own inputs (b: every input and output bound; the timing
// runs write the outputs, which the caller's run of the returned plan then overwrites, and add
// into captured tensors' gradients, which the caller zeroes again), stores the choice and
// returns the plan to run.
plan::LaunchPlan tune_call(const TunedPlan& t, const ir::Variant& variant, const runner::Bindings& b,
                           const at::Tensor& like, const std::vector<at::Tensor>& buffers);

}  // namespace ae::torch_ops
