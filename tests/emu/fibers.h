// The emulators' threads (hip_host.h: gfx90a; cuda_host.h: the NVIDIA templates): a GPU
// block's threads as fibers on one OS thread (ucontext), run round-robin. A fiber runs until
// something makes it wait, then yields to the scheduler (run_fibers). Deterministic, and no
// OS thread per GPU thread contending for the machine's cores. A round in which every live
// fiber waited and nothing changed (no arrival, no phase turned) is a deadlock: reported, and
// the process aborts (a protocol bug a GPU would hang on).
#pragma once

#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

namespace emu {

struct Scheduler {
  ucontext_t main;
  std::vector<ucontext_t> ctx;
  std::vector<std::vector<char>> stacks;
  std::vector<bool> done;
  std::vector<int> sleep;  // rounds a fiber sits out (EMU_CHAOS)
  int current = 0;
  std::function<void()> body;
};
inline Scheduler* sched = nullptr;
// Bumped by every event that can let a waiting fiber go on (the deadlock check's).
inline unsigned long long progress = 0;

inline void yield() { swapcontext(&sched->ctx[sched->current], &sched->main); }

// EMU_CHAOS=<seed>: a fiber also yields at random points (arrivals at and departures from
// barriers, the stand-ins' memory operations) and then sits out a random number of rounds, so
// that other interleavings than round-robin's run: a missing barrier then shows as a wrong
// answer where the default order happens to hide it.
inline unsigned long long chaos_state = [] {
  const char* s = std::getenv("EMU_CHAOS");
  return s ? std::strtoull(s, nullptr, 10) * 2654435761ull + 1 : 0ull;
}();
inline void maybe_yield() {
  if (!chaos_state || !sched) return;
  chaos_state ^= chaos_state << 13, chaos_state ^= chaos_state >> 7, chaos_state ^= chaos_state << 17;
  if (chaos_state % 3 == 0) {
    ++progress;  // (a yield by choice is not a deadlock)
    // (short: a race whose window spans many collective operations needs a longer one, which
    // made the emulation far too slow: not caught)
    sched->sleep[sched->current] = static_cast<int>((chaos_state >> 8) % 16);
    yield();
  }
}

// n fibers arrive; the last one runs on_phase (if any), starts the next phase and goes on, the
// others wait (yielding) until the phase has turned. arrive() counts without waiting.
struct Barrier {
  int n, count = 0;
  unsigned long phase = 0;
  std::function<void()> on_phase;
  bool arrive() {  // whether this arrival turned the phase
    maybe_yield();
    ++progress;
    if (++count < n) return false;
    count = 0;
    if (on_phase) on_phase();
    ++phase;
    return true;
  }
  void arrive_and_wait() {
    const unsigned long mine = phase;
    if (!arrive())
      while (phase == mine) yield();
    maybe_yield();  // (and on the way out: others may run first past the barrier)
  }
};

inline void fiber_entry() {
  sched->body();
  sched->done[sched->current] = true;  // (uc_link returns to the scheduler)
}

// Runs body once per thread of a block of `threads`; enter(t) makes t the running thread
// (its threadIdx) before each switch to it.
inline void run_fibers(int threads, std::function<void()> body, const std::function<void(int)>& enter,
                       size_t stack_bytes = 256 * 1024) {
  Scheduler s;
  s.body = std::move(body);
  s.ctx.resize(threads);
  s.stacks.assign(threads, std::vector<char>(stack_bytes));
  s.done.assign(threads, false);
  s.sleep.assign(threads, 0);
  sched = &s;
  for (int t = 0; t < threads; ++t) {
    getcontext(&s.ctx[t]);
    s.ctx[t].uc_stack.ss_sp = s.stacks[t].data();
    s.ctx[t].uc_stack.ss_size = stack_bytes;
    s.ctx[t].uc_link = &s.main;
    makecontext(&s.ctx[t], fiber_entry, 0);
  }
  for (bool left = true; left;) {
    left = false;
    const unsigned long long before = progress;
    bool finished = false;
    for (int t = 0; t < threads; ++t) {
      if (s.done[t]) continue;
      if (s.sleep[t] > 0) {
        --s.sleep[t];
        left = true;
        ++progress;
        continue;
      }
      s.current = t;
      enter(t);
      swapcontext(&s.main, &s.ctx[t]);
      left |= !s.done[t];
      finished |= s.done[t];
    }
    if (left && !finished && progress == before) {
      std::fprintf(stderr, "emu: deadlock: every live thread waits and nothing changed; waiting:");
      for (int t = 0; t < threads; ++t)
        if (!s.done[t]) std::fprintf(stderr, " %d", t);
      std::fprintf(stderr, "\n");
      std::abort();
    }
  }
  sched = nullptr;
}

}  // namespace emu
