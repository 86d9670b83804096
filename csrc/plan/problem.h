// The planner's input: one attention call described as plain data (no tensors, no device),
// and what planning needs to know of the variant.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ir/variant.h"

namespace ae::plan {

enum class OpKind { Forward, Backward };  // decode, varlen, ...: the inference issue
enum class ElemType { BFloat16, Float16, Float32, Float64, Int32, Other };
// How K and V (and Q) are laid out: dense [B, H, S, D] tensors; dense ones whose batches have
// their own key counts (a KV cache's lengths: a forward's mask bound kv_idx < lengths[b] moved
// into the layout, csrc/ir/length_bound.h); or K and V in pages named by a page table (a paged
// KV cache, with those lengths where the mask gives them); or packed sequences of different
// lengths (Q, K and V token-major, each sequence's rows named by cumulative lengths; batch,
// q_len and kv_len are then the sequence count and the longest sequence's lengths).
enum class KvLayout { Dense, KvLengths, Paged, Varlen };
// Where block sparsity comes from: none; the variant's mask_mod (block-state tables made by a
// kernel that evaluates it per score); or a block tensor the mask looks up
// (ir/block_mask.h: the table from the tensor's codes and the rest of the mask's own table).
enum class BlockSparsity { None, MaskMod, BlockTensor };

const char* elem_name(ElemType t);  // "bfloat16", "float16", "float32", "float64", "other"

struct CapturedTensor {
  std::string dtype;  // torch's name: "float32", "int64", ...
  int rank = 0;
  bool wants_grad = false;  // backward: its gradient is asked for
  int64_t numel = 0;        // elements (of its fp32 gradient too: the same shape, dense)
};

struct Problem {
  OpKind kind = OpKind::Forward;
  ElemType dtype = ElemType::BFloat16;  // of q, k, v (and dout)
  int64_t batch = 0, q_heads = 0, kv_heads = 0, q_len = 0, kv_len = 0, d_qk = 0, d_v = 0;
  double scale = 0;
  KvLayout kv_layout = KvLayout::Dense;
  int64_t page_size = 0;  // KvLayout::Paged: key rows per page (kv_len: the table's capacity)
  BlockSparsity sparsity = BlockSparsity::None;
  std::vector<CapturedTensor> captured;
  // Backward: the same gradients bit for bit run to run (dQ's additions in a fixed order).
  bool deterministic = false;
  // V is K's first d_v columns (the same memory: v = kv[..., :d_v]), as MLA's latent cache
  // has it; the MLA decode kernel reads V from K's tiles.
  bool v_in_k = false;
  // Forward: the gate-training forward, which also writes each query row's largest score per
  // block of pool_block keys (0: an ordinary forward).
  int64_t pool_block = 0;
  int64_t group() const { return kv_heads > 0 ? q_heads / kv_heads : 0; }
};

// What the planner needs of a variant (read off an ir::Variant, or written by hand in tests).
struct VariantTraits {
  std::string key;             // the variant's hash: part of cache keys
  bool has_mask = false;       // a mask_mod that can drop scores
  bool mask_per_batch = false, mask_per_head = false;  // it depends on b / h
  bool mask_reads_buffers = false;  // it reads captured tensors (its blocks can change per call)
  bool score_loads = false;    // the score_mod loads a captured tensor per score
  bool mask_loads = false;     // the mask_mod loads a captured tensor per score (partial blocks)
  bool score_pow = false;      // the score_mod has a pow of a non-constant exponent
  bool score_special = false;  // the score_mod computes a special function per score
  bool score_masks = false;    // a mod writes -inf: any block can have masked keys
  ir::Normalize normalize = ir::Normalize::Softmax;
  bool log_domain = false;     // a custom normalization's (its online steps are softmax's)
  // The mask's block-tensor lookup (ir/block_mask.h; buffer -1: none) and the traits of the
  // rest of the mask (ir::Variant::without_block_mask).
  ir::BlockMaskLookup blocks;
  bool rest_has_mask = false, rest_per_batch = false, rest_per_head = false,
       rest_reads_buffers = false;
  std::string rest_key;

  static VariantTraits of(const ir::Variant& v);
};

// A problem for `variant`'s traits: sparsity from its mask.
Problem with_sparsity(Problem p, const VariantTraits& traits);

}  // namespace ae::plan
