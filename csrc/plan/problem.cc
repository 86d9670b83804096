#include "plan/problem.h"

namespace ae::plan {

const char* elem_name(ElemType t) {
  switch (t) {
    case ElemType::BFloat16: return "bfloat16";
    case ElemType::Float16: return "float16";
    case ElemType::Float32: return "float32";
    case ElemType::Float64: return "float64";
    case ElemType::Int32: return "int32";
    case ElemType::Other: return "other";
  }
  return "?";
}

VariantTraits VariantTraits::of(const ir::Variant& v) {
  VariantTraits t;
  t.key = v.key;
  t.has_mask = v.analysis.has_mask;
  t.mask_per_batch = (v.analysis.mask_deps & ir::kDepB) != 0;
  t.mask_per_head = (v.analysis.mask_deps & ir::kDepH) != 0;
  t.mask_reads_buffers = (v.analysis.mask_deps & ir::kDepBuffer) != 0;
  t.score_loads = v.analysis.score_loads_per_element;
  t.mask_loads = v.analysis.mask_loads_per_element;
  t.score_pow = v.analysis.score_pow;
  t.score_special = v.analysis.score_special;
  t.score_masks = v.analysis.writes_infinity;
  t.normalize = v.forward.normalize;
  t.log_domain = v.forward.log_domain;
  if (v.without_block_mask) {
    const VariantTraits rest = of(*v.without_block_mask);
    t.blocks = v.block_mask;
    t.rest_has_mask = rest.has_mask;
    t.rest_per_batch = rest.mask_per_batch;
    t.rest_per_head = rest.mask_per_head;
    t.rest_reads_buffers = rest.mask_reads_buffers;
    t.rest_key = rest.key;
  }
  return t;
}

Problem with_sparsity(Problem p, const VariantTraits& traits) {
  p.sparsity = !traits.has_mask           ? BlockSparsity::None
               : traits.blocks.buffer >= 0 ? BlockSparsity::BlockTensor
                                           : BlockSparsity::MaskMod;
  return p;
}

}  // namespace ae::plan
