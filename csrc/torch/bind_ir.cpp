// Python bindings of the IR: build a Variant from a trace and look at its graphs.
#include <fmt/format.h>
#include <pybind11/stl.h>

#include "codegen/instantiate.h"
#include "ir/error.h"
#include "ir/variant.h"
#include "plan/linear_plan.h"
#include "plan/planner.h"
#include "torch/bindings.h"
#include "torch/checks.h"
#include "torch/cuda_backend.h"
#include "torch/linear.h"

namespace ae::py {
namespace {

// What Python holds for one compiled definition: the shared Variant plus this trace's own
// graph text (its buffer names and source lines).
struct VariantHandle {
  std::shared_ptr<const ir::Variant> variant;
  std::string text;
};

// kernel_source: plans a problem of 4k keys and q_len queries (B 1, 16 heads; at 4k queries
// enough query tiles that the forward does not split the keys; AE_KV_SPLITS=N plans the
// split-KV forward; 16 queries or fewer plan the decode template) on a device class and
// returns the step's source and launch facts (for the compile-all check, sass_dump, and the
// curious).
// kv_lengths: the forward of the variant without its mask's length bound, on the per-batch
// lengths layout (ir/length_bound.h), as a call with the lengths tensor plans it; varlen: the
// same on the packed-sequences layout (the attention_varlen op's).
pybind11::dict kernel_source(const ir::Variant& given, const std::string& step, int d_qk, int d_v,
                             bool bf16, const std::vector<std::string>& buffer_dtypes,
                             const std::string& device, const std::string& family,
                             const std::vector<bool>& buffer_grads, bool deterministic,
                             int q_len, bool kv_lengths, int page_size, bool varlen,
                             bool v_in_k, int pool_block) {
  namespace pyb = pybind11;
  kv_lengths = kv_lengths || varlen;
  if (kv_lengths && !given.without_kv_lengths)
    throw ir::GraphError("kv_lengths: the variant's mask has no bound kv_idx < lengths[b]");
  const ir::Variant& v = kv_lengths ? *given.without_kv_lengths : given;
  plan::PlanRequest r;
  r.variant = plan::VariantTraits::of(v);
  const bool backward =
      step == "bwd" || step == "bwd_prep" || step == "bwd_dq" || step == "bwd_rows_custom";
  if (!backward && step != "fwd" && step != "block_state" && step != "block_state_blocks" &&
      step != "fwd_combine" && step != "v_check" && step != "pool_map")
    throw ir::GraphError("step must be fwd, bwd, block_state, block_state_blocks, bwd_prep, "
                         "bwd_dq, bwd_rows_custom, fwd_combine, v_check or pool_map, not " + step);
  if (!buffer_grads.empty() && buffer_grads.size() != buffer_dtypes.size())
    throw ir::GraphError(fmt::format("codegen: {} buffer gradient flags for {} captured tensors",
                                     buffer_grads.size(), buffer_dtypes.size()));
  plan::Problem& pb = r.problem;
  pb.kind = backward ? plan::OpKind::Backward : plan::OpKind::Forward;
  pb.dtype = bf16 ? plan::ElemType::BFloat16 : plan::ElemType::Float16;
  if (q_len < 1) throw ir::GraphError(fmt::format("q_len must be at least 1, not {}", q_len));
  pb.batch = 1, pb.q_heads = pb.kv_heads = 16, pb.q_len = q_len, pb.kv_len = 4096;
  pb.d_qk = d_qk, pb.d_v = d_v, pb.scale = 1.0;
  pb.deterministic = backward && deterministic;
  pb.v_in_k = v_in_k;
  pb.pool_block = pool_block;
  for (size_t i = 0; i < buffer_dtypes.size(); ++i) {
    // Rank and size as traced (the gradients' shared-memory copy depends on the size).
    plan::CapturedTensor t{buffer_dtypes[i], 1, backward && i < buffer_grads.size() && buffer_grads[i]};
    if (i < v.forward.buffers.size()) {
      const std::vector<int64_t>& shape = v.forward.buffers[i].shape;
      t.rank = static_cast<int>(shape.size());
      t.numel = 1;
      for (int64_t d : shape) t.numel *= d;
    }
    pb.captured.push_back(t);
  }
  pb = plan::with_sparsity(pb, r.variant);
  if (kv_lengths) pb.kv_layout = plan::KvLayout::KvLengths;
  if (page_size > 0) pb.kv_layout = plan::KvLayout::Paged, pb.page_size = page_size;
  if (varlen) pb.kv_layout = plan::KvLayout::Varlen;
  if (!plan::devices::named(device, &r.device))
    throw ir::GraphError("device must be h100, h200, a100, ada or mi250, not " + device);
  if (family == "sm80") r.family = codegen::Family::Sm80;
  else if (family == "sm90") r.family = codegen::Family::Sm90;
  else if (family == "gfx90a") r.family = codegen::Family::Gfx90a;
  else if (!family.empty())
    throw ir::GraphError("family must be sm80, sm90 or gfx90a, not " + family);
  r.overrides = plan::TuningOverrides::from_environment();
  const plan::LaunchPlan plan = plan::make_plan(r);
  if (!plan.ok) throw ir::GraphError(plan.reason);
  for (const plan::Step& s : plan.steps) {
    if (step != codegen::kind_name(s.spec.kind)) continue;
    pyb::dict d;
    // (A block tensor's rest table is built from the variant without the lookup.)
    d["source"] = codegen::instantiate(s.spec.of_rest ? v.without_block_mask.get() : &v, s.spec);
    d["entry"] = s.spec.entry();
    d["options"] = s.spec.compile_options();
    d["fallback_options"] = s.spec.fallback_options();  // the registry's, on spills
    d["threads"] = s.threads;
    d["smem"] = s.smem;
    d["describe"] = s.spec.describe();
    d["family"] = std::string(codegen::family_name(s.spec.family));
    d["plan"] = plan.describe();
    return d;
  }
  throw ir::GraphError(fmt::format("the plan has no {} step (the variant {} a mask):\n{}", step,
                                   r.variant.has_mask ? "has" : "has no", plan.describe()));
}

// linear_kernel_sources: linear attention's plan (plan/linear_plan.h) on a device class, each
// step's source and launch (the compile-all check, the emulator's tests).
pybind11::list linear_kernel_sources(bool step, int d_k, int d_v, bool bf16, const std::string& device,
                                     int batch, int heads, int t_len, bool per_channel,
                                     bool backward, int n_seqs, int n_chunks, int state_cols) {
  plan::LinearProblem pb;
  pb.step = step;
  pb.backward = backward;
  pb.n_seqs = n_seqs, pb.n_chunks = n_chunks;
  pb.dtype = bf16 ? plan::ElemType::BFloat16 : plan::ElemType::Float16;
  pb.batch = batch, pb.heads = heads, pb.t_len = step ? 1 : t_len, pb.d_k = d_k, pb.d_v = d_v;
  pb.per_channel = per_channel;
  pb.state_cols = state_cols;
  plan::DeviceCaps dev;
  if (!plan::devices::named(device, &dev))
    throw ir::GraphError("device must be h100, h200, a100, ada or mi250, not " + device);
  const plan::LaunchPlan plan = plan::plan_linear(pb, dev);
  if (!plan.ok) throw ir::GraphError(plan.reason);
  pybind11::list out;
  for (const plan::Step& st : plan.steps) {
    pybind11::dict d;
    d["step"] = std::string(codegen::kind_name(st.spec.kind));
    d["source"] = codegen::instantiate(nullptr, st.spec);
    d["entry"] = st.spec.entry();
    d["options"] = st.spec.compile_options();
    d["fallback_options"] = st.spec.fallback_options();
    d["threads"] = st.threads;
    d["smem"] = st.smem;
    d["grid"] = std::vector<unsigned>{st.grid.x, st.grid.y, st.grid.z};
    d["describe"] = st.spec.describe();
    d["n_chunks"] = plan.linear.n_chunks;
    out.append(d);
  }
  return out;
}

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
      .def_property_readonly("kv_lengths_buffer",
                             [](const VariantHandle& h) { return h.variant->kv_lengths_buffer; },
                             "The captured tensor of the mask's bound kv_idx < lengths[b] that a "
                             "forward takes as its KV layout (csrc/ir/length_bound.h), or -1.")
      .def_property_readonly(
          "block_tensor",
          [](const VariantHandle& h) -> pybind11::object {
            const ir::BlockMaskLookup& f = h.variant->block_mask;
            if (f.buffer < 0) return pybind11::none();
            pybind11::dict d;
            d["buffer"] = f.buffer;
            d["codes"] = f.codes;
            d["block_q"] = f.block_q;
            d["block_k"] = f.block_k;
            d["by_batch"] = f.by_batch;
            d["head_div"] = f.head_div;
            return d;
          },
          "The mask's lookup of a block tensor whose tiles the planner builds from the tensor "
          "(csrc/ir/block_mask.h): its captured index, codes (FlexAttention's 0 / 1 / 2) or "
          "bool, block sizes, indexed by b, head index (0: none, 1: h, G: h // G); None if the "
          "mask has none.")
      .def_property_readonly("without_kv_lengths_text",
                             [](const VariantHandle& h) {
                               return h.variant->without_kv_lengths
                                          ? h.variant->without_kv_lengths->forward.text(false)
                                          : std::string();
                             },
                             "The canonical text of the variant without that bound ('' if none).")
      .def_property_readonly("num_nodes", [](const VariantHandle& h) { return h.variant->forward.nodes.size(); })
      .def("kernel_source",
           [](const VariantHandle& h, const std::string& step, int d_qk, int d_v, bool bf16,
              const std::vector<std::string>& buffer_dtypes, const std::string& device,
              const std::string& family, const std::vector<bool>& buffer_grads,
              bool deterministic, int q_len, bool kv_lengths, int page_size, bool varlen,
              bool v_in_k, int pool_block) {
             return kernel_source(*h.variant, step, d_qk, d_v, bf16, buffer_dtypes, device,
                                  family, buffer_grads, deterministic, q_len, kv_lengths,
                                  page_size, varlen, v_in_k, pool_block);
           },
           pyb::arg("step"), pyb::arg("d_qk"), pyb::arg("d_v"), pyb::arg("bf16") = true,
           pyb::arg("buffer_dtypes") = std::vector<std::string>{}, pyb::arg("device") = "h100",
           pyb::arg("family") = "", pyb::arg("buffer_grads") = std::vector<bool>{},
           pyb::arg("deterministic") = false, pyb::arg("q_len") = 4096,
           pyb::arg("kv_lengths") = false, pyb::arg("page_size") = 0, pyb::arg("varlen") = false,
           pyb::arg("v_in_k") = false, pyb::arg("pool_block") = 0,
           "The generated source of one step of the plan the planner makes for this variant on a "
           "device class (h100, h200, a100, ada, mi250) at 4k tokens: step fwd, bwd, "
           "block_state, block_state_blocks (a mask looking up a block tensor: ir/block_mask.h), bwd_prep, bwd_dq, fwd_combine (split-KV: AE_KV_SPLITS) or v_check (a masked forward's; AE_V_CHECK); family sm80, sm90 or gfx90a to ask for one (default: the "
           "planner's choice); buffer_grads: for the backward, which captured tensors get "
           "gradients; deterministic: the deterministic backward's; q_len: the query rows (4096; 16 or "
           "fewer plan the decode template), against 4096 keys; kv_lengths: the forward on the per-batch key lengths layout (the variant without its mask's bound kv_idx < lengths[b]); page_size: the forward on a paged KV cache of such pages; varlen: on packed sequences (the varlen op's); v_in_k: V is K's first d_v columns (MLA's latent cache: at (576, 512) on h100/h200 the MLA decode template); pool_block: the gate-training forward writing block maxima of that many keys (attention_pooled's). Also the step's entry, compile options, threads, shared memory and the "
           "whole plan's text.");

  m.def("linear_kernel_sources", &linear_kernel_sources, pyb::arg("step"), pyb::arg("d_k"),
        pyb::arg("d_v"), pyb::arg("bf16") = true, pyb::arg("device") = "h100",
        pyb::arg("batch") = 1, pyb::arg("heads") = 16, pyb::arg("t_len") = 4096,
        pyb::arg("per_channel") = false, pyb::arg("backward") = false, pyb::arg("n_seqs") = 0,
        pyb::arg("n_chunks") = 0, pyb::arg("state_cols") = 0,
        "Linear attention's plan on a device class (step: the decode step, else the chunked "
        "forward, or with backward its backward; n_seqs / n_chunks: packed sequences; "
        "state_cols: the state passes' value columns per CTA, 32 or 64, 0 the planner's): a dict per launch (step, source, entry, options, threads, smem, grid, "
        "describe, n_chunks); raises with the planner's reason where no kernel takes it.");
  m.def("linear_backward_reason", &torch_ops::linear_backward_reason, pyb::arg("q"), pyb::arg("v"),
        pyb::arg("per_channel"), pyb::arg("offsets") = std::vector<int64_t>{},
        "Why the fused linear attention backward cannot take these inputs ('' when it can).");
  m.def("backend_for", &torch_ops::backend_for, pyb::arg("q"), pyb::arg("k"), pyb::arg("v"),
        pyb::arg("buffers"), pyb::arg("key"), pyb::arg("backward") = false);
  m.def("v_shares_k", &torch_ops::v_shares_k, pyb::arg("k"), pyb::arg("v"),
        "Whether v is a view of k's first v.size(3) columns (the MLA decode kernel's V in K).");
  m.def("varlen_backend_for", &torch_ops::varlen_backend_for, pyb::arg("q"), pyb::arg("k"),
        pyb::arg("v"), pyb::arg("buffers"), pyb::arg("key"), pyb::arg("cu_seqlens_q"),
        pyb::arg("cu_seqlens_k"), pyb::arg("max_seqlen_q"), pyb::arg("max_seqlen_k"),
        "What attention_varlen runs with these inputs (see backend_for).");
  m.def("paged_backend_for", &torch_ops::paged_backend_for, pyb::arg("q"), pyb::arg("k_pages"),
        pyb::arg("v_pages"), pyb::arg("buffers"), pyb::arg("key"), pyb::arg("block_table"),
        "What attention_paged runs with these inputs (see backend_for).");
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
