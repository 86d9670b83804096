// One tuning: candidates compiled and filtered (compile_filter.h), the eligible ones timed by
// the caller's timer (the torch layer's: CUDA events on the call's stream), the fastest kept.
// Torch-free and GPU-free itself: the timer is a function, so the choice logic is tested with
// a fake one.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "tune/compile_filter.h"

namespace ae::tune {

struct Progress {
  std::string what;   // the shape class being tuned, short
  std::string stage;  // "compile" or "time"
  size_t done = 0, total = 0;
  bool finished = false;  // the last report of a tuning (stage "done"), with its result
  std::string result;     // "AE_SM90_FWD=176,2,1,1: 1.234 ms (table 1.301 ms), 12 timed in 8.1 s"
};
using ProgressFn = std::function<void(const Progress&)>;

struct TuneOptions {
  double budget_s = 7.5;  // compiles and timings of one kind; the table's choice is always timed
  int threads = 0;        // compile threads (0: by the cores, at most 8)
  std::string what;       // for the progress reports
  ProgressFn progress;
};

struct TuneResult {
  size_t chosen = 0;           // index into the candidates (0: the table's)
  std::vector<double> ms;      // per candidate: the timer's median, or < 0 where not timed
  std::vector<CompileReport> reports;
  size_t timed = 0;
  double seconds = 0;          // the whole tuning, compiles included
};

// A challenger replaces the table's choice only when faster by more than this fraction: a
// tie in the noise keeps the table's.
constexpr double kMargin = 0.02;

// Times candidates in order (index 0 first, always) while the deadline allows; a timer that
// throws leaves its candidate out. eligible[i] false: not timed.
TuneResult choose(const std::vector<Candidate>& candidates, const std::vector<bool>& eligible,
                  const std::function<double(const Candidate&)>& timer, Clock::time_point deadline,
                  const TuneOptions& options);

// compile_all, then choose, within options.budget_s.
TuneResult tune(const std::vector<Candidate>& candidates, const ir::Variant& variant,
                const plan::DeviceCaps& dev, const std::function<double(const Candidate&)>& timer,
                const TuneOptions& options);

}  // namespace ae::tune
