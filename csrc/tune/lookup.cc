#include "tune/lookup.h"

namespace ae::tune {

Lookup lookup(ChoiceStore& store, const plan::PlanRequest& r, const DeviceIdentity& device) {
  Lookup l;
  l.key = shape_class_key(r, device);
  l.found = store.find(l.key);
  l.overrides = l.found ? overrides_with(l.found->choice) : r.overrides;
  return l;
}

}  // namespace ae::tune
