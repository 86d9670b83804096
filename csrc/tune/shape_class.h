// What a stored tuning choice is keyed by: the variant, the kernel kind and the call's shape
// class on one GPU with one driver and engine. Calls of one class share a choice: lengths
// and batch x heads are bucketed to the next power of two (the tile and split-KV decisions
// change with their magnitude, not with each token).
#pragma once

#include <cstdint>
#include <string>

#include "plan/planner.h"

namespace ae::tune {

// The GPU and software a timing was made on.
struct DeviceIdentity {
  std::string name;         // "NVIDIA H200"
  int multiprocessors = 0;
  int driver = 0;           // cuDriverGetVersion: 12080, 13000
};

// The smallest power of two >= n (1 for n <= 1).
int64_t pow2_bucket(int64_t n);

// "none": no mask; "index": a mask of the indices alone (its density is a function of the
// variant and the bucketed lengths, both in the key); "data": a mask reading captured tensors
// (document ids: its density is the data's, one class for now).
const char* mask_class(const plan::VariantTraits& v);

// The key's text, readable: "v1 fwd <variant> bfloat16 d128x128 q4096 k4096 bh32 g1
// mask:index det0 grads: buf: | NVIDIA H200 sm132 drv13000 ae0.1.0" (" decode" before the "|"
// where request.overrides opt in to the decode template: other candidates, another choice).
std::string shape_class_key(const plan::PlanRequest& request, const DeviceIdentity& device);

}  // namespace ae::tune
