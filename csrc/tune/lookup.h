// The hot path of a call with autotuning on: its shape class's key, the stored choice (memory
// after the first read) and the overrides it plans with. About a microsecond (the issue's
// budget is 5: tests/python/test_tune.py measures it).
#pragma once

#include <optional>
#include <string>

#include "tune/shape_class.h"
#include "tune/store.h"

namespace ae::tune {

struct Lookup {
  std::string key;
  std::optional<StoredChoice> found;
  plan::TuningOverrides overrides;  // overrides_with(the choice), or the environment's alone
};

// request.overrides: the environment's (the key reads the decode opt-in from them).
Lookup lookup(ChoiceStore& store, const plan::PlanRequest& request, const DeviceIdentity& device);

}  // namespace ae::tune
