// Scalar semantics of every op, in double / int64 arithmetic: what one element of the score
// matrix computes. Constant folding uses it, and the tests use it to check autodiff against
// finite differences. It is PyTorch's float64 / int64 semantics, to the bit where PyTorch
// specifies it: floor division and remainder as c10 computes them, maximum / minimum / relu
// propagating nan, sign(nan) = 0, round half to even, integers wrapping around in two's
// complement and compared as integers.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "ir/graph.h"

namespace ae::ir {

struct Value {
  DType type = DType::Float;
  double f = 0;   // Float
  int64_t i = 0;  // Int, Bool (0 / 1)
  double as_float() const { return type == DType::Float ? f : static_cast<double>(i); }
  int64_t as_int() const { return type == DType::Float ? static_cast<int64_t>(f) : i; }
};

Value make_value(DType t, double v);

// Applies a non-leaf op. Returns false (and leaves *out alone) where the result is not
// defined at compile time: integer division or remainder by zero, a negative integer power
// of an integer, a float -> int conversion of nan, inf or a value past int64.
bool apply_op(const Node& n, const std::vector<Value>& args, Value* out);

// Evaluates every node of g for one element. `params` holds score, b, h, q_idx, kv_idx;
// `load(buffer, indices)` returns a buffer element.
using LoadFn = std::function<double(int buffer, const std::vector<int64_t>& idx)>;
std::vector<Value> evaluate(const Graph& g, const double params[kNumParams], const LoadFn& load);

}  // namespace ae::ir
