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
  // Row `row` of (batch b, head h).
  template <class T>
  AE_DEVICE static T* row(T* base, const long long (&stride)[3], int b, int h, int row) {
    return base + b * stride[0] + h * stride[1] + row * stride[2];
  }
  AE_DEVICE static int q_len(const AttnParams& p, int /*b*/) { return p.q_len; }
  AE_DEVICE static int kv_len(const AttnParams& p, int /*b*/) { return p.kv_len; }
  // A row's entry in the per-row statistics (lse, lse2, delta: [batch, q_heads, q_len]).
  AE_DEVICE static long long stat(const AttnParams& p, int b, int h, int row) {
    return (static_cast<long long>(b) * p.q_heads + h) * p.q_len + row;
  }
  // TMA coordinates of a row in the 4-D map [head_dim, rows, heads, batch] over the tensor.
  struct TmaRow {
    int row, head, batch;
  };
  AE_DEVICE static TmaRow tma_row(int b, int h, int row) { return {row, h, b}; }
};

}  // namespace ae
