#include "tune/tuner.h"


namespace ae::tune {
namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

TuneResult choose(const std::vector<Candidate>& cands, const std::vector<bool>& eligible,
                  const std::function<double(const Candidate&)>& timer, Clock::time_point deadline,
                  const TuneOptions& o) {
  TuneResult r;
  r.ms.assign(cands.size(), -1.0);
  size_t todo = 0;
  for (size_t i = 0; i < cands.size(); ++i) todo += i == 0 || eligible[i];
  size_t done = 0;
  for (size_t i = 0; i < cands.size(); ++i) {
    if (i > 0 && (!eligible[i] || Clock::now() >= deadline)) continue;
    try {
      r.ms[i] = timer(cands[i]);
      ++r.timed;
    } catch (const std::exception&) {
      r.ms[i] = -1.0;  // a launch the device refuses: not a choice
    }
    if (o.progress) o.progress({o.what, "time", ++done, todo, false, {}});
  }
  double best = r.ms[0] > 0 ? r.ms[0] * (1.0 - kMargin) : -1.0;
  for (size_t i = 1; i < cands.size(); ++i)
    if (r.ms[i] > 0 && (best < 0 || r.ms[i] < best)) best = r.ms[i], r.chosen = i;
  return r;
}

TuneResult tune(const std::vector<Candidate>& cands, const ir::Variant& variant,
                const plan::DeviceCaps& dev, const std::function<double(const Candidate&)>& timer,
                const TuneOptions& o) {
  const Clock::time_point t0 = Clock::now();
  const auto deadline = t0 + std::chrono::duration_cast<Clock::duration>(
                                 std::chrono::duration<double>(o.budget_s));
  auto done = [&](size_t compiled) {
    if (o.progress) o.progress({o.what, "compile", compiled, cands.size(), false, {}});
  };
  std::vector<CompileReport> reports = compile_all(cands, variant, dev, o.threads, deadline, done);
  std::vector<bool> eligible(cands.size());
  for (size_t i = 0; i < cands.size(); ++i) eligible[i] = reports[i].eligible;
  TuneResult r = choose(cands, eligible, timer, deadline, o);
  r.reports = std::move(reports);
  r.seconds = seconds_since(t0);
  return r;
}

}  // namespace ae::tune
