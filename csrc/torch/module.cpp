// attention_engine._C: the pybind11 module. The torch ops themselves are registered with
// TORCH_LIBRARY in ops.cpp and reached through torch.ops.attention_engine.
#include "torch/bindings.h"
#include "version.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "attention_engine native core";
  m.attr("__version__") = AE_VERSION;
  ae::py::bind_ir(m);
  ae::py::bind_jit(m);
  ae::py::bind_tune(m);
}
