// The planner's host cost per call (issue 18's host-overhead question): make_plan and reading
// the AE_* overrides for a decode problem (B1, 32:8 heads, 32k keys, the lengths layout), in
// microseconds, on the CPU. Build against the CMake build's core library:
//
//   g++ -O2 -std=c++17 -DFMT_HEADER_ONLY=1 -Icsrc -Ithird_party -Itemplates \
//       -I.venv/lib/python3.11/site-packages/torch/include bench/plan_cost.cc \
//       build/cmake/libae_core.a -ldl -lpthread -o build/plan_cost && build/plan_cost
#include <chrono>
#include <cstdio>

#include "plan/overrides.h"
#include "plan/planner.h"

int main() {
  using namespace ae::plan;
  PlanRequest r;
  r.problem.kind = OpKind::Forward;
  r.problem.batch = 1, r.problem.q_heads = 32, r.problem.kv_heads = 8;
  r.problem.q_len = 1, r.problem.kv_len = 32768, r.problem.d_qk = r.problem.d_v = 128;
  r.problem.scale = 0.088;
  r.problem.kv_layout = KvLayout::KvLengths;
  r.variant.key = "plain";
  r.device = devices::h200();
  using clock = std::chrono::steady_clock;
  for (int rep = 0; rep < 3; ++rep) {
    constexpr int n = 20000;
    const auto t0 = clock::now();
    for (int i = 0; i < n; ++i)
      if (!make_plan(r).ok) return 1;
    const auto t1 = clock::now();
    for (int i = 0; i < n; ++i) (void)TuningOverrides::from_environment();
    const auto t2 = clock::now();
    std::printf("make_plan %.2f us, overrides %.2f us\n",
                std::chrono::duration<double, std::micro>(t1 - t0).count() / n,
                std::chrono::duration<double, std::micro>(t2 - t1).count() / n);
  }
  return 0;
}
