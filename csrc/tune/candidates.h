// The autotuner's search space: for one call (a PlanRequest), the choices (choice.h) worth
// timing, each planned. The tile tables and the AE_* overrides already express every knob
// (plan/overrides.h): a candidate is a set of those variables, planned as a sweep would plan
// it, so anything the planner refuses (shared memory, the register estimate of the sm90
// forward's override) is never a candidate.
#pragma once

#include <vector>

#include "plan/planner.h"
#include "tune/choice.h"

namespace ae::tune {

struct Candidate {
  Choice choice;
  plan::LaunchPlan plan;
  // The main kernel's step (the forward or the backward), or null (an empty problem).
  const plan::Step* main_step() const;
};

// The choices for the request's kind and the family its table plan runs, the table's own ("")
// first: the sm90 forward's key-block widths with and without overlap / ping-pong, a third
// stage, the persistent grid; the sm80 forward's warps, rows and keys per tile and ptxas
// levels; the sm80 backward's tiles (in place of the sm90 backward too); split-KV counts where
// the query tiles leave SMs idle; the decode template's tiles where AE_DECODE=1 opts in to it.
// Not yet: head groups.
std::vector<Choice> choice_space(const plan::PlanRequest& request);

// choice_space planned (each with overrides_with(choice): an AE_* set in the environment wins),
// those that plan to the same launches as an earlier one dropped; the table's first, the others
// nearest it first (a budget that runs out keeps those). Empty when the table's own plan is
// refused (the reference executor runs: nothing to tune).
std::vector<Candidate> candidates(const plan::PlanRequest& request);

}  // namespace ae::tune
