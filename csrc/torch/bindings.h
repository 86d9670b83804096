// Each part of the core adds its Python bindings to attention_engine._C through one function.
#pragma once
// pybind11 with torch's type casters; <torch/extension.h> (the whole C++ frontend on top) made
// each file that includes this one take 3 to 4 times longer to compile.
#include <torch/csrc/utils/pybind.h>

namespace ae::py {
void bind_ir(pybind11::module_& m);   // bind_ir.cpp: trace parsing, graphs, variants
void bind_jit(pybind11::module_& m);  // bind_jit.cpp: compiler, cache, launch
void bind_tune(pybind11::module_& m);  // bind_tune.cpp: the autotuner's modes, store, candidates
}  // namespace ae::py
