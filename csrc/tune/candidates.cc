#include "tune/candidates.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <set>

namespace ae::tune {
namespace {

Choice one(const std::string& name, const std::string& value) {
  Choice c;
  c.vars[name] = value;
  return c;
}

void sm90_forward(std::vector<Choice>& out) {
  // Widths past the register estimate (tile_tables.cc) are dropped by the override's check.
  for (int bn : {64, 80, 96, 112, 128, 144, 160, 176, 192})
    for (const char* sched : {"1,1", "0,0"})
      out.push_back(one("AE_SM90_FWD", fmt::format("{},2,{}", bn, sched)));
  out.push_back(one("AE_SM90_FWD", "128,2,1,0"));  // overlap without ping-pong
  for (int bn : {64, 128}) out.push_back(one("AE_SM90_FWD", fmt::format("{},3,1,1", bn)));
  // the softmax ahead of P V's wait, or not (the table's rule is measured at head dim 128 only)
  for (int ahead : {0, 1}) out.push_back(one("AE_SM90_FWD", fmt::format("128,3,1,1,{}", ahead)));
  out.push_back(one("AE_PERSISTENT", "on"));
}

void sm80_forward(std::vector<Choice>& out) {
  for (const char* rows : {"4,2", "8,1"})
    for (int bn : {32, 64, 96, 128})
      for (int reg : {-1, 0}) out.push_back(one("AE_SM80_FWD", fmt::format("{},{},{}", rows, bn, reg)));
}

void sm80_backward(std::vector<Choice>& out, bool instead_of_sm90) {
  for (int bn : {128, 64})
    for (int stages : {2, 1})
      for (int reg : {0, -1}) {
        Choice c = one("AE_SM80_BWD", fmt::format("{},{},{}", bn, stages, reg));
        if (instead_of_sm90) c.vars["AE_DISABLE_SM90_BWD"] = "1";
        out.push_back(c);
      }
}

// How far a candidate is from the table's choice. A budget may cut a tuning short: the
// configurations nearest the table's (the hand sweeps behind the tables favoured it) go first.
double distance(const Candidate& c, const Candidate& table) {
  const plan::Step *a = c.main_step(), *b = table.main_step();
  if (!a || !b) return 0;
  const codegen::KernelSpec &x = a->spec, &y = b->spec;
  double d = std::abs(x.block_n - y.block_n) / 16.0 + std::abs(x.block_m - y.block_m) / 16.0 +
             std::abs(x.warps - y.warps) / 4.0 + std::abs(x.stages - y.stages);
  d += 4.0 * (x.family != y.family) + (x.overlap != y.overlap) + (x.pingpong != y.pingpong) +
       (x.softmax_ahead != y.softmax_ahead) + (x.persistent != y.persistent) +
       0.5 * (x.reg_level != y.reg_level);
  return d + std::abs(std::log2(std::max(1, c.plan.attn.kv_splits)) -
                      std::log2(std::max(1, table.plan.attn.kv_splits)));
}

}  // namespace

const plan::Step* Candidate::main_step() const {
  for (const plan::Step& s : plan.steps)
    if (s.spec.kind == codegen::Kind::Forward || s.spec.kind == codegen::Kind::Backward) return &s;
  return nullptr;
}

std::vector<Choice> choice_space(const plan::PlanRequest& r) {
  std::vector<Choice> out{Choice{}};
  plan::PlanRequest table = r;
  table.overrides = overrides_with({});
  const Candidate t{{}, plan::make_plan(table)};
  const plan::Step* main = t.main_step();
  if (!main) return out;  // refused or empty: nothing to tune
  // The knobs of the family the table's plan runs (on Hopper, head dims without an sm90 kernel
  // run the sm80 templates).
  const bool sm90 = main->spec.family == codegen::Family::Sm90;
  if (r.problem.kind == plan::OpKind::Forward) {
    if (sm90) sm90_forward(out);
    else if (!main->spec.decode) sm80_forward(out);
    // Split-KV where the table's plan leaves SMs idle (decode, small batches).
    const long long tiles = static_cast<long long>(t.plan.attn.n_q_blocks) * t.plan.attn.q_heads *
                            t.plan.attn.batch;
    if (tiles > 0 && tiles < r.device.multiprocessors)
      for (int n : {1, 2, 4, 8, 16, 32}) out.push_back(one("AE_KV_SPLITS", std::to_string(n)));
    // The decode template's keys per block and warps, where the table's plan runs it (opted in
    // with AE_DECODE=1).
    if (main->spec.decode)
      for (int bn : {64, 128, 256})
        for (int warps : {2, 4, 8})
          if (bn % (16 * warps) == 0) out.push_back(one("AE_DECODE", fmt::format("{},{}", bn, warps)));
  } else {
    sm80_backward(out, /*instead_of_sm90=*/sm90);  // the sm90 backward has one shape: the table's
  }
  return out;
}

std::vector<Candidate> candidates(const plan::PlanRequest& request) {
  std::vector<Candidate> out;
  std::set<std::string> seen;
  for (const Choice& c : choice_space(request)) {
    plan::PlanRequest r = request;
    r.overrides = overrides_with(c);
    Candidate cand{c, plan::make_plan(r)};
    if (!cand.plan.ok) {
      if (c.vars.empty()) return {};  // the table refuses: the reference runs
      continue;
    }
    if (seen.insert(cand.plan.describe()).second) out.push_back(std::move(cand));
  }
  if (!out.empty())
    std::stable_sort(out.begin() + 1, out.end(), [&](const Candidate& a, const Candidate& b) {
      return distance(a, out[0]) < distance(b, out[0]);
    });
  return out;
}

}  // namespace ae::tune
