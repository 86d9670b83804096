// Where the rows of Q, K, V, O and their gradients live: the KV-source (tile addressing)
// policy. Kernels take a `Layout` type from their config and address every row through it, so
// a new layout (packed varlen sequences, a paged KV cache: the inference issue) is a new
// policy here, not an edit of every kernel.
#pragma once

#include "common/ae_common.h"
#include "common/params.h"

namespace ae {

// Dense [batch, heads, rows, head_dim] tensors, the last dim contiguous, per-tensor strides
// (elements) for batch, head and row; every batch has p.q_len query and p.kv_len key rows.
struct DenseLayout {
  // Row `row` of (batch b, head h) of Q, O, dO (q_row) or K, V, dK, dV (kv_row).
  template <class T>
  AE_DEVICE static T* q_row(const AttnParams&, T* base, const long long (&stride)[3], int b, int h,
                            int row) {
    return base + b * stride[0] + h * stride[1] + row * stride[2];
  }
  template <class T>
  AE_DEVICE static T* kv_row(const AttnParams&, T* base, const long long (&stride)[3], int b, int h,
                             int row) {
    return base + b * stride[0] + h * stride[1] + row * stride[2];
  }
  // Where the sm80 family's K and V loaders start for (batch b, head h): row 0 here (rows
  // stride[2] apart); PagedLayout's is the head's place in page 0, its rows found by page.
  template <class T>
  AE_DEVICE static T* kv_head(const AttnParams& p, T* base, const long long (&stride)[3], int b,
                              int h) {
    return kv_row(p, base, stride, b, h, 0);
  }
  AE_DEVICE static int q_len(const AttnParams& p, int /*b*/) { return p.q_len; }
  AE_DEVICE static int kv_len(const AttnParams& p, int /*b*/) { return p.kv_len; }
  // The key blocks of block_n keys batch b has (a forward's walk stops there).
  AE_DEVICE static int kv_blocks(const AttnParams& p, int /*b*/, int /*block_n*/) {
    return p.n_kv_blocks;
  }
  // A row's entry in the per-row statistics (lse, lse2, delta: [batch, q_heads, q_len]).
  AE_DEVICE static long long stat(const AttnParams& p, int b, int h, int row) {
    return (static_cast<long long>(b) * p.q_heads + h) * p.q_len + row;
  }
  // TMA coordinates of a row in the 4-D map [head_dim, rows, heads, batch] over the tensor.
  struct TmaRow {
    int row, head, batch;
  };
  AE_DEVICE static TmaRow q_tma(const AttnParams&, int b, int h, int row) { return {row, h, b}; }
  AE_DEVICE static TmaRow kv_tma(const AttnParams&, int b, int h, int row) { return {row, h, b}; }
  // Rows per page of K and V (PagedLayout), 0: not paged.
  static constexpr int kPage = 0;
  // Batches with their own query counts (VarlenLayout): a forward's tiles past them leave.
  static constexpr bool kVarlen = false;
};

// Dense tensors whose batches have their own key counts (a KV cache's filled lengths, padded
// varlen sequences): p.kv_lens[b], clamped into [0, p.kv_len] (the tensors' rows), so that a
// length past the cache reads no memory outside it. Keys past a batch's length are masked, and
// its blocks past them never visited. The planner chooses it where the mask's conjunct
// `kv_idx < lengths[b]` was recognized (csrc/ir/length_bound.h) and drops that conjunct from
// the kernel's mask.
struct KvLengthsLayout : DenseLayout {
  AE_DEVICE static int kv_len(const AttnParams& p, int b) {
    if (!p.kv_lens) return p.kv_len;  // (PagedLayout without a length bound: the capacity)
    const long long i = static_cast<long long>(b) * p.kv_lens_stride;
    const long long n = p.kv_lens_int32 ? static_cast<const int*>(p.kv_lens)[i]
                                        : static_cast<const long long*>(p.kv_lens)[i];
    return static_cast<int>(n < 0 ? 0 : n > p.kv_len ? p.kv_len : n);
  }
  AE_DEVICE static int kv_blocks(const AttnParams& p, int b, int block_n) {
    return (kv_len(p, b) + block_n - 1) / block_n;
  }
};

// A paged KV cache (FlashInfer's and vLLM's layout): K and V are pages of PAGE rows,
// [num_pages, kv_heads, PAGE, d] (strides: page, head, row; the TMA maps' "batch" is the page),
// and batch b's key row r is row r % PAGE of page p.page_table[b][r / PAGE]. sm90/fwd.h loads a
// block in boxes of at most a page, the entries from a window of the table its producer warp
// keeps in shared memory; the sm80 forward and decode templates look each row's page up as they
// issue its cp.async (sm80/tile_io.h load_paged). The key count per batch comes from p.kv_lens
// where the mask's length bound gave one, else it is the table's capacity (p.kv_len). A table
// entry past the columns is never read (the column is clamped), and a page index out of range
// loads zeros (TMA fills out-of-bounds boxes with zeros; the sm80 loaders check the index
// against p.num_pages and zero-fill), so a bad table cannot fault. Q and O stay dense.
template <int PAGE_>
struct PagedLayout : KvLengthsLayout {
  static constexpr int kPage = PAGE_;
  // Batch b's page of table column col (clamped into the table's columns).
  AE_DEVICE static int page(const AttnParams& p, int b, int col) {
    return p.page_table[b * p.page_table_stride + min(col, p.max_pages - 1)];
  }
  // Batch b's row of the table, and in it the page of column col (clamped into the columns):
  // -1 where the entry names none of the pool's pages.
  AE_DEVICE static const int* table_row(const AttnParams& p, int b) {
    return p.page_table + b * p.page_table_stride;
  }
  AE_DEVICE static int pool_page(const AttnParams& p, const int* table, int col) {
    const int pg = table[min(col, p.max_pages - 1)];
    return static_cast<unsigned>(pg) < static_cast<unsigned>(p.num_pages) ? pg : -1;
  }
  // Head h's place in page 0: row r of (b, h) lies pool_page * stride[0] + (r % PAGE) *
  // stride[2] past it.
  template <class T>
  AE_DEVICE static T* kv_head(const AttnParams&, T* base, const long long (&stride)[3], int /*b*/,
                              int h) {
    return base + h * stride[1];
  }
  // Row `row` of (batch b, head h) through the table; null where its entry names no page.
  template <class T>
  AE_DEVICE static T* kv_row(const AttnParams& p, T* base, const long long (&stride)[3], int b,
                             int h, int row) {
    const int pg = pool_page(p, table_row(p, b), row / kPage);
    if (pg < 0) return nullptr;
    return kv_head(p, base, stride, b, h) + pg * stride[0] + (row % kPage) * stride[2];
  }
};

// Packed sequences of different lengths (FlashAttention's varlen layout): the tensors are
// token-major, Q and O [total_q, q_heads, d] and K and V [total_k, kv_heads, d], seen as
// [1, heads, total, d]; the kernels' batch index is the sequence, b's query rows being
// p.cu_q[b] .. p.cu_q[b + 1] and its key rows p.cu_k[b] .. (int32 cumulative lengths), and row
// indices count within the sequence (the positions the mods see). Key counts are
// KvLengthsLayout's (p.kv_lens: the variant's length bound, which the op's caller makes the
// differences of cu_k; one load per use: two spilled the sm80 forward). The cumulative lengths
// are trusted (python/attention_engine/inference.py varlen checks them on the host). The
// statistics are [q_heads, total_q] (FlashAttention's lse). A tile's TMA box may run into the next sequence's
// rows: those query rows are never stored, those keys lie past kv_len (the checked path masks
// them), and TMA reads zeros past the tensor.
struct VarlenLayout : KvLengthsLayout {
  static constexpr bool kVarlen = true;
  AE_DEVICE static int q_start(const AttnParams& p, int b) { return p.cu_q[b]; }
  AE_DEVICE static int kv_start(const AttnParams& p, int b) { return p.cu_k[b]; }
  template <class T>
  AE_DEVICE static T* q_row(const AttnParams& p, T* base, const long long (&stride)[3], int b, int h,
                            int row) {
    return base + h * stride[1] + static_cast<long long>(q_start(p, b) + row) * stride[2];
  }
  template <class T>
  AE_DEVICE static T* kv_row(const AttnParams& p, T* base, const long long (&stride)[3], int b,
                             int h, int row) {
    return base + h * stride[1] + static_cast<long long>(kv_start(p, b) + row) * stride[2];
  }
  template <class T>
  AE_DEVICE static T* kv_head(const AttnParams& p, T* base, const long long (&stride)[3], int b,
                              int h) {
    return kv_row(p, base, stride, b, h, 0);
  }
  // (Clamped into the grid's rows: a split-KV launch's partial rows are q_len apart.)
  AE_DEVICE static int q_len(const AttnParams& p, int b) {
    return min(p.cu_q[b + 1] - p.cu_q[b], p.q_len);
  }
  AE_DEVICE static long long stat(const AttnParams& p, int b, int h, int row) {
    return static_cast<long long>(h) * p.q_total + q_start(p, b) + row;
  }
  AE_DEVICE static TmaRow q_tma(const AttnParams& p, int b, int h, int row) {
    return {q_start(p, b) + row, h, 0};
  }
  AE_DEVICE static TmaRow kv_tma(const AttnParams& p, int b, int h, int row) {
    return {kv_start(p, b) + row, h, 0};
  }
};

}  // namespace ae
