// Type inference and validation: every node gets its result type from its arguments
// (PyTorch's promotion rules restricted to bool < int < float), and what makes no sense
// (a float index, ~ on a float, a load with the wrong number of indices) is a GraphError
// naming the user's line.
#pragma once

#include "ir/graph.h"

namespace ae::ir {

DType promote(DType a, DType b);
// Sets Node::type for every non-leaf node and checks argument types and buffer ranks.
void infer_types(Graph& g);
// Checks the outputs: "score" a number (an int score is cast to float), "mask" a bool.
void check_outputs(Graph& g);

}  // namespace ae::ir
