// Kernel arguments, shared by the host (g++) and the device (NVRTC / hipRTC): plain
// fixed-size structs passed by value, so both sides agree on the layout. Which kernel takes
// which, in what order, is codegen/kernel_abi.h's to say.
#pragma once

namespace ae {

constexpr int kMaxBuffers = 8;  // captured tensors per variant
constexpr int kMaxRank = 4;     // dims per captured tensor

// One captured tensor: element strides and sizes (indices are clamped into the sizes),
// and where its gradient accumulates (fp32, contiguous, gstride), or null.
struct BufferArg {
  const void* data;
  float* grad;
  long long stride[kMaxRank];
  long long size[kMaxRank];
  long long gstride[kMaxRank];
};

struct VariantArgs {
  BufferArg buf[kMaxBuffers];
};

// q/k/v/o/do/dk/dv: [batch, heads, rows, head_dim] with the last dim contiguous; strides in
// elements for (batch, head, row). lse, lse2, delta: [batch, q_heads, q_len] contiguous fp32.
struct AttnParams {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  float* lse;          // natural log (forward output; the backward reads lse2)
  const void* dout;    // backward only from here
  const float* lse2;   // lse * log2(e), +inf where lse is -inf (rows with nothing kept)
  const float* delta;  // rowsum(dO * O) - dlse
  float* dq_accum;     // [batch, q_heads, n_q_blocks * block_m, the kernel's Dqk] fp32: dS K,
                       // unscaled; rows past q_len (padding) absorb additions, never read.
                       // Row-major, or tiled (BwdRowParams::acc_tiled)
  int* dq_order;       // deterministic backward: a counter per dQ tile [batch, q_heads,
                       // n_q_blocks] (common/dq_order.h); null otherwise
  void* dk;
  void* dv;
  long long q_stride[3], k_stride[3], v_stride[3], o_stride[3];
  long long do_stride[3], dk_stride[3], dv_stride[3];
  // Per (batch, head, q block, kv block): 0 nothing kept, 1 partly, 2 everything kept.
  // Null: no mask (every block full). Strides 0 where the mask ignores batch or head.
  const unsigned char* block_state;
  long long state_stride_b, state_stride_h;
  int n_q_blocks, n_kv_blocks;
  int head_group;  // forward: CTAs take the heads of a group fastest (common/tile_scheduler.h)
  int batch, q_heads, kv_heads, group, q_len, kv_len;
  float scale;       // applied to q.k
  float scale_log2;  // scale * log2(e), for variants without a score_mod
  // Split-KV forward (decode: few query tiles, long keys): the key blocks are cut into
  // kv_splits ranges of kv_split_blocks each; the CTA of range s writes its partial O (fp32,
  // normalized over its range) and LSE to o_part / lse_part, [s, batch, q_heads, q_len(, d_v)]
  // contiguous, and the combine kernel (common/split_combine.h) merges them into o and lse.
  // kv_splits <= 1: no split, o and lse directly.
  float* o_part;
  float* lse_part;
  int kv_splits, kv_split_blocks;
  // The tensors' head dims: the combine kernel's row width (d_v), and the columns a kernel
  // built for a larger, padded head dim stores (csrc/plan/tile_tables.h sm90_padded).
  int d_qk, d_v;
  int row_stats;      // the combine: merge by LSE (softmax), else add (normalize none)
  // Persistent forward (common/tile_scheduler.h PersistentTiles): the tiles drawn so far past
  // the grid's first ones; zeroed before the launch. Null otherwise.
  int* tile_counter;
  // Forward: whether V holds inf or nan anywhere the forward reads, as the V-check pass
  // (common/v_check.h) found it: 0 lets the forwards skip their scans of masked tiles' V
  // (nvidia/exact_pv.h). Zeroed before that pass; null where none ran (the forwards scan).
  int* v_flag;
  // KvLengthsLayout (common/kv_layout.h): each batch's key count, int64 (or int32 where
  // kv_lens_int32), element b * kv_lens_stride. Null with other layouts.
  const void* kv_lens;
  long long kv_lens_stride;
  int kv_lens_int32;
  // PagedLayout (common/kv_layout.h): K and V are pages [num_pages, kv_heads, page_size, d]
  // (k_stride / v_stride: page, head, row); batch b's key row r is row r % page_size of page
  // page_table[b * page_table_stride + r / page_size] (int32, max_pages entries per batch).
  // The sm80 family's loaders zero-fill rows whose entry is outside [0, num_pages).
  const int* page_table;
  long long page_table_stride;
  int max_pages, num_pages;
  // VarlenLayout (common/kv_layout.h): sequence b's query rows cu_q[b] .. cu_q[b + 1] of
  // q_total, its key rows cu_k[b] .. (int32, batch + 1 entries each). Null with other layouts.
  const int* cu_q;
  const int* cu_k;
  int q_total;
  // The gate-training forward (AE_POOL_BLOCK keys per block: nvidia/mma_rows.h
  // store_block_max): each query row's largest score of each key block, in the normalization's
  // log2 domain, into block_max [batch, q_heads, ceil(q_len / pool_block), n_pool_blocks,
  // pool_block] (common/block_max_layout.h: a query block's rows of a key block contiguous,
  // and its key blocks one after the other, so that the map's pass reads one stream per query
  // block), filled with -inf before the launch (the blocks a walk skips keep it). Null
  // otherwise.
  float* block_max;
  int n_pool_blocks;
  // Its second step (common/pool_map.h): the pooled map [batch, q_heads, ceil(q_len /
  // pool_block), n_pool_blocks] from block_max and lse; pool_block: keys (and query rows) per
  // pooled block.
  float* pooled;
  int pool_block;
};

// The backward's row passes (common/bwd_rows.h). dout, o, dq: [batch, heads, q_len, dim]
// with the last dim contiguous and rows 16-byte aligned, strides in elements for (batch,
// head, row); lse, dlse, delta, lse2: [batch, heads, q_len] contiguous fp32 (delta null:
// normalize none, only dq_accum is zeroed; dlse null: none); dq_accum: [batch, heads,
// acc_rows, acc_cols] fp32 (acc_cols: the main kernel's head dim, d_qk or past it when padded).
struct BwdRowParams {
  const void* dout;
  const void* o;
  const float* lse;
  const float* dlse;
  float* delta;
  float* lse2;
  float* dq_accum;
  int* dq_order;  // deterministic backward: zeroed here, [batch, heads, ceil(q_len / order_rows)]
  void* dq;
  long long do_stride[3], o_stride[3], dq_stride[3];
  int batch, heads, q_len, acc_rows, d_qk, d_v, acc_cols;
  int lanes;    // per row: a power of two up to 32 (row_pass_lanes, common/shapes.h)
  float scale;  // dq = scale * dq_accum
  // dq_accum's layout: 0 row-major; 1 tiled as the sm90 backward adds it (whole 64 x 64 fp32
  // tiles, one bulk reduction each): per (batch, head), tiles [row / 64][col / 64], each
  // row-major with 64 columns, column c of row r at c ^ 8 (r % 8) (rowpass::acc_at).
  int acc_tiled;
  // The deterministic backward's query rows per dQ tile counter: the main kernel's query block
  // (0: 64, the NVIDIA families').
  int order_rows;
  // Packed sequences (VarlenLayout): batch b's rows of dout, o and dq are rows cu_q[b] ..
  // cu_q[b + 1] of [1, heads, q_total, dim] tensors and its statistics [heads, q_total]
  // (q_len: the longest sequence's; dq_accum stays [batch, heads, acc_rows, acc_cols]). Null:
  // dense.
  const int* cu_q;
  int q_total;
};

// The block-state kernel's output (common/block_state.h): the table of codes for tiles of
// block_m x block_n, per batch and per query head where the mask depends on them.
struct BlockStateParams {
  unsigned char* state;
  int block_m, block_n;
  int per_batch, per_head;
  // block_state_from_blocks: the table of the mask's rest (null: no rest, every tile full),
  // with its own batch and head dependence.
  const unsigned char* rest;
  int rest_per_batch, rest_per_head;
  // Query rows per half tile (common/block_walk.h kBlockHalves): 0, no halves (the sm90
  // forward's 64: a consumer warpgroup's rows). half_n: keys per half instead (the sm90
  // backward's 64: an MMA warpgroup's keys); at most one of the two is set.
  int half_m, half_n;
};

// Linear attention (python/attention_engine/linear.py: S_t = diag(exp(a_t)) S_{t-1} + k_t v_t^T,
// o_t = scale * q_t^T S_t), on feature-mapped q, k, v. q, k: [batch, heads, t_len, d_k], v, o:
// [batch, heads, t_len, d_v], last dim contiguous, strides in elements for (batch, head, row);
// a: natural-log decays, fp32 contiguous, [batch, heads, t_len] (per_channel: [.., d_k]).
//   The decode step (common/linear_step.h): t_len 1; state [batch, heads, d_k, d_v] fp32 read
//   and updated in place.
//   The chunked forward (sm80/linear_fwd.h): its state pass writes the state at each chunk's
//   start to chunk_states ([batch, heads, n_chunks, d_k, d_v], q's dtype) and the last one to
//   state (null: not asked), from state0 (null: zeros); its output pass reads them.
struct LinearParams {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  const float* a;
  float* state;
  const float* state0;
  void* chunk_states;
  long long q_stride[3], k_stride[3], v_stride[3], o_stride[3];
  int batch, heads, t_len, d_k, d_v, n_chunks;
  int per_channel;
  float scale;
  // Packed sequences (batch 1): sequence n is tokens cu_seqlens[n] .. cu_seqlens[n + 1] (int32,
  // n_seqs + 1 entries; null: each batch is one sequence of t_len tokens), its states
  // state0[n], state[n] (and the gradients'); chunk_map (int32): each sequence's first chunk
  // (n_seqs + 1 entries, the last n_chunks), then each chunk's sequence, then its first token
  // (n_chunks each). n_chunks: the chunks of all sequences.
  const int* cu_seqlens;
  const int* chunk_map;
  int n_seqs;
  // The chunked backward (sm80/linear_bwd.h; it reruns the state pass for chunk_states): dout
  // like o; dq, dk, dv like q, k, v; da fp32 like a; dstate the final state's gradient (null:
  // zeros), dstate0 the initial state's (null: not asked); dchunk_states the gradient of the
  // state at each chunk's end, like chunk_states.
  const void* dout;
  void* dq;
  void* dk;
  void* dv;
  float* da;
  const float* dstate;
  float* dstate0;
  void* dchunk_states;
  long long do_stride[3], dq_stride[3], dk_stride[3], dv_stride[3];
};

// A CUtensorMap (TMA descriptor, built on the host by cuTensorMapEncodeTiled): 128 opaque
// bytes, 64-byte aligned, passed to sm90 kernels as a __grid_constant__ parameter.
struct alignas(64) TmaDesc {
  unsigned long long opaque[16];
};

}  // namespace ae
