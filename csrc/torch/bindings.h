// Each part of the core adds its Python bindings to attention_engine._C through one function.
#pragma once
#include <torch/extension.h>

namespace ae::py {
void bind_ir(pybind11::module_& m);   // bind_ir.cpp: trace parsing, graphs, variants
void bind_jit(pybind11::module_& m);  // bind_jit.cpp: compiler, cache, launch
void bind_tune(pybind11::module_& m);  // bind_tune.cpp: the autotuner's modes, store, candidates
}  // namespace ae::py
