// Python bindings of the IR: build a Variant from a trace and look at its graphs.
#include <pybind11/stl.h>

#include "codegen/kernel_spec.h"
#include "codegen/row_passes.h"
#include "ir/error.h"
#include "torch/cuda_backend.h"
#include "torch/kernel_registry.h"
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
      .def_property_readonly("num_nodes", [](const VariantHandle& h) { return h.variant->forward.nodes.size(); })
      .def("kernel_source",
           [](const VariantHandle& h, const std::string& kind, int d_qk, int d_v, bool bf16,
              const std::vector<std::string>& buffer_dtypes, const std::string& arch,
              const std::vector<bool>& buffer_grads) {
             if (kind != "fwd" && kind != "bwd" && kind != "block_state" && kind != "fwd90")
               throw ir::GraphError("kernel kind must be fwd, fwd90, bwd or block_state, not " +
                                    kind);
             const codegen::Kind k = kind == "fwd" || kind == "fwd90" ? codegen::Kind::Forward
                                     : kind == "bwd"                  ? codegen::Kind::Backward
                                                                      : codegen::Kind::BlockState;
             const codegen::TileHints hints = codegen::tile_hints(*h.variant);
             codegen::TileChoice c =
                 kind == "fwd90"
                     ? codegen::choose_sm90(d_qk, d_v, bf16, hints, 227 * 1024)
                     : codegen::choose_sm80(
                           k == codegen::Kind::BlockState ? codegen::Kind::Forward : k, d_qk, d_v,
                           bf16, hints, 227 * 1024);
             if (!c.ok) throw ir::GraphError(c.reason);
             c.spec.kind = k;
             c.spec.arch = kind == "fwd90" ? "sm_90a" : arch;
             c.spec.buffer_dtypes = buffer_dtypes;
             if (k == codegen::Kind::Backward) c.spec.buffer_grads = buffer_grads;
             pyb::dict d;
             d["source"] = codegen::instantiate(*h.variant, c.spec);
             d["entry"] = c.spec.entry();
             d["options"] = c.spec.compile_options();
             d["fallback_options"] = c.spec.fallback_options();  // get_kernel's, on spills
             d["threads"] = k == codegen::Kind::BlockState ? 128 : c.spec.threads();
             d["smem"] = codegen::smem_bytes(c.spec);
             d["describe"] = c.spec.describe();
             return d;
           },
           pyb::arg("kind"), pyb::arg("d_qk"), pyb::arg("d_v"), pyb::arg("bf16") = true,
           pyb::arg("buffer_dtypes") = std::vector<std::string>{}, pyb::arg("arch") = "sm_80",
           pyb::arg("buffer_grads") = std::vector<bool>{},
           "The generated kernel source for one instantiation (kind: fwd, fwd90 (always sm_90a), "
           "bwd, block_state); buffer_grads: for bwd, which captured tensors get gradients.");

  m.def("row_pass_source",
        [](const std::string& pass, bool bf16) {
          if (pass != "prep" && pass != "dq")
            throw ir::GraphError("row pass must be prep or dq, not " + pass);
          const codegen::RowPassSource r = codegen::row_pass_source(
              pass == "prep" ? codegen::RowPass::Prep : codegen::RowPass::Dq, bf16);
          pyb::dict d;
          d["source"] = r.source;
          d["entry"] = r.entry;
          d["describe"] = r.describe;
          return d;
        },
        pyb::arg("pass"), pyb::arg("bf16") = true,
        "The source of one of the backward's variant-free row passes (prep, dq).");
  m.def("backend_for", &torch_ops::backend_for, pyb::arg("q"), pyb::arg("k"), pyb::arg("v"),
        pyb::arg("buffers"), pyb::arg("key"));
  m.def("clear_kernel_caches", &torch_ops::clear_kernel_caches,
        "Drops the in-process kernel caches (the next call loads from the disk cache).");

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
