// The tile tables, one per family and kind: for a shape and a variant, the configurations to
// try in order of preference. The planner takes the first that fits the device's shared
// memory; the autotuner (its issue) will time them instead. The tuning overrides replace the
// first entry's fields.
#pragma once

#include <string>
#include <vector>

#include "codegen/kernel_spec.h"
#include "plan/overrides.h"

namespace ae::plan {

struct TableQuery {
  int d_qk = 0, d_v = 0;
  bool bf16 = true;
  bool score_loads = false;  // the score_mod loads a captured tensor per score
  bool mask_loads = false;   // the mask_mod does (on partial blocks), or stands in for one
  bool mask_mod_loads = false;  // the mask_mod itself does (not a custom normalization's stand-in)
  bool score_pow = false;    // the score_mod has a pow of a non-constant exponent
  bool score_special = false;  // the score_mod computes a special function per score (tanh...)
  bool captured_grads = false;  // the backward sums a captured tensor's gradient
  bool softmax = true;       // the row normalization is softmax (else none)
  // Keys per block of a block tensor the mask looks up (ir/block_mask.h; 0: none): tiles
  // that lie inside one block are whole blocks' worth of kept or skipped keys.
  int mask_block_k = 0;
};

struct Candidates {
  std::vector<codegen::KernelSpec> specs;  // in order of preference; empty: see refusal
  std::string refusal;                     // why the family has no kernel for the shape
};

Candidates sm80_forward(const TableQuery& q, const TuningOverrides& o);
// The decode template (sm80/decode.h, any NVIDIA GPU from sm_80): for forwards of at most
// sm80::kDecodeBlockM query rows.
Candidates decode_forward(const TableQuery& q, const TuningOverrides& o);
Candidates sm80_backward(const TableQuery& q, const TuningOverrides& o);
Candidates sm90_forward(const TableQuery& q, const TuningOverrides& o);
Candidates sm90_backward(const TableQuery& q);
// The MLA decode template (sm90/mla_decode.h): head dims sm90::mla_has accepts, V in K.
Candidates sm90_mla_forward(const TableQuery& q);
// Head dims the sm90 kernels lack (multiples of 16 from 64 up: 80, 96, 112, 160, ..., and
// pairs such as 192 / 192 or 64 / 256) are planned as the smallest pair of multiples of 64 at
// or above them that `has` accepts (the specs' d_qk / d_v; least Dqk + Dv, then least Dqk):
// TMA fills the columns past the tensors' with zeros, which add nothing to Q K^T, dP or the
// gradients' real columns, and the kernels (built with KernelSpec::padded) store only the
// tensors' columns (AttnParams d_qk / d_v). Unchanged when `has` accepts the dims as they are
// or nothing at or above them. sm90_forward and sm90_backward apply it.
using HasKernel = bool (*)(int d_qk, int d_v);
TableQuery sm90_padded(TableQuery q, HasKernel has);
bool sm90_forward_has(int d_qk, int d_v);
bool sm90_backward_has(int d_qk, int d_v);
// few_rows: at most 64 query rows (gfx90a_table.cc).
Candidates gfx90a_forward(const TableQuery& q, bool few_rows);
Candidates gfx90a_backward(const TableQuery& q);

// The dynamic shared memory a spec's kernel needs: the templates' own formulas
// (templates/*/shapes.h), which their configs check against their layouts.
int smem_bytes(const codegen::KernelSpec& spec);

}  // namespace ae::plan
