// Parses the tracer's output (JSON text, see python/attention_engine/trace.py for the
// writer) into a typed, validated Graph.
#pragma once

#include <string>

#include "ir/graph.h"

namespace ae::ir {

// Throws GraphError on malformed JSON, unknown ops, bad references and type errors.
Graph parse_trace(const std::string& json_text);

// The torch dtype names a captured tensor may have, and their graph type.
bool dtype_from_torch(const std::string& torch_dtype, DType* t);

}  // namespace ae::ir
