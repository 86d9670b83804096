// Python bindings of the IR: build a Variant from a trace and look at its graphs.
#include <pybind11/stl.h>

#include "ir/error.h"
#include "ir/variant.h"
#include "torch/bindings.h"

namespace ae::py {
namespace {

// What Python holds for one compiled definition: the shared Variant plus this trace's own
// graph text (its buffer names and source lines).
struct VariantHandle {
  std::shared_ptr<const ir::Variant> variant;
  std::string text;
};

}  // namespace

void bind_ir(pybind11::module_& m) {
  namespace pyb = pybind11;
  pyb::register_exception<ir::GraphError>(m, "GraphError", PyExc_ValueError);

  pyb::class_<VariantHandle>(m, "Variant")
      .def_property_readonly("key", [](const VariantHandle& h) { return h.variant->key; })
      .def_property_readonly("normalize", [](const VariantHandle& h) {
        return std::string(ir::normalize_name(h.variant->forward.normalize));
      })
      .def("text", [](const VariantHandle& h) { return h.text; },
           "The optimized forward graph, with buffer names and source lines.")
      .def("canonical_text", [](const VariantHandle& h) { return h.variant->forward.text(false); },
           "The text the variant's hash covers.")
      .def("backward_text", [](const VariantHandle& h) { return h.variant->backward.text(true); },
           "The graph with its derivatives (d_score, d_load).")
      .def("analysis", [](const VariantHandle& h) { return h.variant->analysis.text(); })
      .def_property_readonly("has_mask", [](const VariantHandle& h) { return h.variant->analysis.has_mask; })
      .def_property_readonly("mask_is_index_only",
                             [](const VariantHandle& h) { return h.variant->analysis.mask_is_index_only; })
      .def_property_readonly("num_nodes", [](const VariantHandle& h) { return h.variant->forward.nodes.size(); });

  m.def("build_variant", [](const std::string& trace_json) {
    VariantHandle h;
    ir::Graph display;
    {
      pyb::gil_scoped_release release;
      h.variant = ir::build_variant(trace_json, &display);
    }
    h.text = display.text(true);
    return h;
  }, pyb::arg("trace_json"),
     "Parses, validates, optimizes and differentiates a trace; registers it under its hash.");
}

}  // namespace ae::py
