#include "tune/compile_filter.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "runner/kernel_registry.h"

namespace ae::tune {

std::string unfit(const jit::KernelFigures& f, const plan::Step& step, const plan::DeviceCaps& dev) {
  if (f.spills()) return fmt::format("spills ({} bytes stored, {} loaded)", f.spill_stores, f.spill_loads);
  if (f.registers > 255 || int64_t{f.registers} * step.threads > 65536)
    return fmt::format("{} registers x {} threads", f.registers, step.threads);
  const int smem = std::max(0, f.smem_bytes) + step.smem;
  if (smem > dev.smem_per_block)
    return fmt::format("{} bytes of shared memory, the device allows {}", smem, dev.smem_per_block);
  return {};
}

std::vector<CompileReport> compile_all(const std::vector<Candidate>& cands, const ir::Variant& variant,
                                       const plan::DeviceCaps& dev, int threads,
                                       Clock::time_point deadline,
                                       const std::function<void(size_t)>& done) {
  std::vector<CompileReport> reports(cands.size());
  std::atomic<size_t> next{0};
  std::mutex m;
  std::condition_variable cv;
  size_t finished = 0;
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < cands.size();) {
      CompileReport& r = reports[i];
      const plan::Step* step = cands[i].main_step();
      if (!step) {
        r.why = "no kernel (an empty problem)";
      } else if (i > 0 && Clock::now() >= deadline) {
        r.why = "deadline";
      } else {
        try {
          const jit::KernelPtr k = runner::get_kernel(&variant, step->spec);
          r.compiled = true;
          r.figures = k->result.figures;
          r.why = unfit(r.figures, *step, dev);
          r.eligible = r.why.empty();
        } catch (const std::exception& e) {
          r.why = e.what();
        }
      }
      std::lock_guard<std::mutex> lock(m);
      ++finished;
      cv.notify_one();
    }
  };
  if (threads <= 0)
    threads = static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 16u));
  threads = std::max(1, std::min<int>(threads, static_cast<int>(cands.size())));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(work);
  for (size_t reported = 0; reported < cands.size();) {
    std::unique_lock<std::mutex> lock(m);
    cv.wait(lock, [&] { return finished > reported; });
    reported = finished;
    lock.unlock();
    if (done) done(reported);
  }
  for (std::thread& t : pool) t.join();
  return reports;
}

}  // namespace ae::tune
