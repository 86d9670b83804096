#include "torch/bindings.h"

namespace ae::py {
void bind_ir(pybind11::module_& m) {}
}  // namespace ae::py
