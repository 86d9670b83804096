// The runner's argument packing (runner/runner.h's call_args), without a GPU: what a plan and
// the bound tensors put into the argument structs the kernels read.
#include <gtest/gtest.h>

#include "plan/planner.h"
#include "runner/runner.h"

namespace ae::runner {
namespace {

using plan::WorkspaceId;

// A [b, h, s, d] tensor at a made-up address, strides of a contiguous one (or transposed
// heads and rows, like q.transpose(1, 2) of a [b, s, h, d] tensor).
TensorRef tensor(uintptr_t addr, int64_t b, int64_t h, int64_t s, int64_t d, bool bshd = false) {
  TensorRef t;
  t.data = reinterpret_cast<void*>(addr);
  t.rank = 4;
  const int64_t sizes[4] = {b, h, s, d};
  for (int i = 0; i < 4; ++i) t.size[i] = sizes[i];
  t.stride[3] = 1;
  if (bshd) {
    t.stride[1] = d, t.stride[2] = h * d, t.stride[0] = s * h * d;
  } else {
    t.stride[2] = d, t.stride[1] = s * d, t.stride[0] = h * s * d;
  }
  t.dtype = plan::ElemType::BFloat16;
  t.elem_size = 2;
  return t;
}

plan::PlanRequest request(plan::OpKind kind) {
  plan::PlanRequest r;
  r.problem.kind = kind;
  r.problem.batch = 2, r.problem.q_heads = 8, r.problem.kv_heads = 2;
  r.problem.q_len = 1000, r.problem.kv_len = 1500, r.problem.d_qk = r.problem.d_v = 128;
  r.problem.scale = 0.088;
  r.variant.key = "v";
  r.variant.has_mask = true;
  r.problem = plan::with_sparsity(r.problem, r.variant);
  r.device = plan::devices::a100();
  return r;
}

TEST(RunnerArgs, ForwardPointersStridesAndShape) {
  const plan::LaunchPlan p = make_plan(request(plan::OpKind::Forward));
  ASSERT_TRUE(p.ok) << p.reason;
  Bindings b;
  b.q = tensor(0x1000, 2, 8, 1000, 128, true);
  b.k = tensor(0x2000, 2, 2, 1500, 128);
  b.v = tensor(0x3000, 2, 2, 1500, 128);
  b.o = tensor(0x4000, 2, 8, 1000, 128);
  b.lse.data = reinterpret_cast<void*>(0x5000);
  b.workspaces[static_cast<int>(WorkspaceId::BlockStates)].data = reinterpret_cast<void*>(0x6000);
  TensorRef bias = tensor(0x7000, 1, 1, 8, 129);
  bias.rank = 2, bias.size[0] = 8, bias.size[1] = 129, bias.stride[0] = 129, bias.stride[1] = 1;
  b.captured.push_back({bias, {}});
  CallArgs a = call_args(p, b);
  EXPECT_EQ(a.attn.q, reinterpret_cast<void*>(0x1000));
  EXPECT_EQ(a.attn.q_stride[1], 128);   // heads
  EXPECT_EQ(a.attn.q_stride[2], 1024);  // rows of a [b, s, h, d] tensor
  EXPECT_EQ(a.attn.k_stride[2], 128);
  EXPECT_EQ(a.attn.o, reinterpret_cast<void*>(0x4000));
  EXPECT_EQ(a.attn.lse, reinterpret_cast<float*>(0x5000));
  EXPECT_EQ(a.attn.dout, nullptr);
  EXPECT_EQ(a.attn.block_state, reinterpret_cast<const unsigned char*>(0x6000));
  EXPECT_EQ(a.attn.q_len, 1000);
  EXPECT_EQ(a.attn.kv_len, 1500);
  EXPECT_EQ(a.attn.group, 4);
  EXPECT_EQ(a.attn.n_q_blocks, 8);   // 128-row tiles
  EXPECT_EQ(a.attn.n_kv_blocks, 24);  // 64-key tiles on the A100
  EXPECT_FLOAT_EQ(a.attn.scale, 0.088f);
  EXPECT_EQ(a.captured.buf[0].data, reinterpret_cast<void*>(0x7000));
  EXPECT_EQ(a.captured.buf[0].size[1], 129);
  EXPECT_EQ(a.captured.buf[0].grad, nullptr);
  EXPECT_EQ(a.block_states.state, reinterpret_cast<unsigned char*>(0x6000));
  EXPECT_EQ(a.block_states.block_m, 128);
  EXPECT_EQ(a.block_states.block_n, 64);
  // The ABI picks the structs in order.
  const plan::Step& fwd = p.steps.back();
  const codegen::KernelAbi& abi = codegen::abi_of(fwd.spec);
  ASSERT_EQ(abi.args.size(), 2u);
  EXPECT_EQ(a.at(abi.args[0]), &a.attn);
  EXPECT_EQ(a.at(abi.args[1]), &a.captured);
  EXPECT_EQ(a.at(codegen::abi_of(p.steps.front().spec).args[2]), &a.block_states);
}

TEST(RunnerArgs, BackwardWorkspacesAndRowPasses) {
  const plan::LaunchPlan p = make_plan(request(plan::OpKind::Backward));
  ASSERT_TRUE(p.ok) << p.reason;
  Bindings b;
  b.q = tensor(0x1000, 2, 8, 1000, 128);
  b.k = tensor(0x2000, 2, 2, 1500, 128);
  b.v = tensor(0x3000, 2, 2, 1500, 128);
  b.o = tensor(0x4000, 2, 8, 1000, 128);
  b.lse.data = reinterpret_cast<void*>(0x5000);
  b.dout = tensor(0x8000, 2, 8, 1000, 128, true);
  b.dq = tensor(0x9000, 2, 8, 1000, 128);
  b.dk = tensor(0xa000, 2, 2, 1500, 128);
  b.dv = tensor(0xb000, 2, 2, 1500, 128);
  auto bind = [&](WorkspaceId id, uintptr_t addr) {
    b.workspaces[static_cast<int>(id)].data = reinterpret_cast<void*>(addr);
  };
  bind(WorkspaceId::DqAccum, 0xc000);
  bind(WorkspaceId::Delta, 0xd000);
  bind(WorkspaceId::Lse2, 0xe000);
  const CallArgs a = call_args(p, b);
  EXPECT_EQ(a.attn.dout, reinterpret_cast<void*>(0x8000));
  EXPECT_EQ(a.attn.do_stride[2], 8 * 128);
  EXPECT_EQ(a.attn.lse, nullptr);  // the main kernel reads lse2
  EXPECT_EQ(a.attn.lse2, reinterpret_cast<float*>(0xe000));
  EXPECT_EQ(a.attn.delta, reinterpret_cast<float*>(0xd000));
  EXPECT_EQ(a.attn.dq_accum, reinterpret_cast<float*>(0xc000));
  EXPECT_EQ(a.attn.dk, reinterpret_cast<void*>(0xa000));
  EXPECT_EQ(a.attn.n_q_blocks, 16);  // 64-query blocks
  EXPECT_EQ(a.rows.o, reinterpret_cast<void*>(0x4000));
  EXPECT_EQ(a.rows.lse, reinterpret_cast<float*>(0x5000));
  EXPECT_EQ(a.rows.dlse, nullptr);
  EXPECT_EQ(a.rows.dq, reinterpret_cast<void*>(0x9000));
  EXPECT_EQ(a.rows.acc_rows, 16 * 64);
  EXPECT_EQ(a.rows.d_qk, 128);
  EXPECT_FLOAT_EQ(a.rows.scale, 0.088f);
}

// A paged cache: k and v [num_pages, kv_heads, page_size, d] as with_kvcache passes them (a
// [num_pages, page_size, kv_heads, d] pool transposed), the int32 table [batch, max_pages].
TEST(RunnerArgs, PagedTableAndPool) {
  plan::PlanRequest r = request(plan::OpKind::Forward);
  r.problem.kv_layout = plan::KvLayout::Paged;
  r.problem.page_size = 16;
  r.problem.kv_len = 96 * 16;
  const plan::LaunchPlan p = make_plan(r);
  ASSERT_TRUE(p.ok) << p.reason;
  Bindings b;
  b.q = tensor(0x1000, 2, 8, 1000, 128);
  b.k = tensor(0x2000, 300, 2, 16, 128, true);
  b.v = tensor(0x3000, 300, 2, 16, 128, true);
  b.o = tensor(0x4000, 2, 8, 1000, 128);
  b.page_table = tensor(0x5000, 1, 1, 2, 96);
  b.page_table.rank = 2, b.page_table.size[0] = 2, b.page_table.size[1] = 96;
  b.page_table.stride[0] = 100, b.page_table.stride[1] = 1;  // a view of wider rows
  b.page_table.elem_size = 4;
  const CallArgs a = call_args(p, b);
  EXPECT_EQ(a.attn.page_table, reinterpret_cast<const int*>(0x5000));
  EXPECT_EQ(a.attn.page_table_stride, 100);
  EXPECT_EQ(a.attn.max_pages, 96);
  EXPECT_EQ(a.attn.num_pages, 300);  // the sm80 loaders zero-fill rows of entries past it
  EXPECT_EQ(a.attn.k_stride[0], 16 * 2 * 128);  // page
  EXPECT_EQ(a.attn.k_stride[1], 128);           // head
  EXPECT_EQ(a.attn.k_stride[2], 2 * 128);       // row
  EXPECT_EQ(a.attn.kv_len, 96 * 16);
}

}  // namespace
}  // namespace ae::runner
