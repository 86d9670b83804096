// A tuning choice: a few of the planner's AE_* tuning variables (plan/overrides.h) with
// values, as the autotuner stores them. A candidate is such a set; planning with it is
// planning with those variables set, so the tuner and the sweeps of bench/ speak one language.
// Text form: "AE_SM90_FWD=176,2,1,1 AE_KV_SPLITS=4" (sorted by name; "" is the table's own).
#pragma once

#include <map>
#include <string>

#include "plan/overrides.h"

namespace ae::tune {

struct Choice {
  std::map<std::string, std::string> vars;  // name -> value

  std::string text() const;
  // Parses text(); throws std::invalid_argument naming what is wrong (an unknown or untunable
  // variable, a value other than digits, commas, '-' or "on").
  static Choice parse(const std::string& text);
  bool operator==(const Choice& o) const { return vars == o.vars; }
};

// The variables a choice may set: the tile, family, split and scheduling switches.
bool tunable(const std::string& name);

// The overrides a call plans with: each variable from the environment where it is set there
// (an explicit AE_* wins, as in a sweep), else from the choice. AE_DECODE's tiles come from the
// choice only where the environment opts in with AE_DECODE=1.
plan::TuningOverrides overrides_with(const Choice& choice);

}  // namespace ae::tune
