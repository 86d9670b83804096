#include "runner/runner.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>

#include "jit/launch.h"
#include "runner/kernel_registry.h"
#include "runner/tma.h"

namespace ae::runner {
namespace {

using codegen::Arg;
using plan::WorkspaceId;

void strides3(long long (&dst)[3], const TensorRef& t) {
  for (int i = 0; i < 3; ++i) dst[i] = t.stride[i];
}

const TensorRef& ws(const Bindings& b, WorkspaceId id) {
  return b.workspaces[static_cast<int>(id)];
}
float* ws_f32(const Bindings& b, WorkspaceId id) { return static_cast<float*>(ws(b, id).data); }

// One step's kernel (compiled or found) launched with its grid, threads and shared memory.
void launch(const plan::Step& step, const ir::Variant* variant, void** args, void* stream, int device) {
  jit::LaunchConfig cfg;
  cfg.grid = {step.grid.x, step.grid.y, step.grid.z};
  cfg.block = {static_cast<unsigned>(step.threads), 1, 1};
  cfg.dynamic_smem = static_cast<unsigned>(step.smem);
  cfg.stream = stream;
  cfg.device = device;
  jit::launch_kernel(*get_kernel(variant, step.spec), cfg, args);
}

AttnParams attn_params(const plan::LaunchPlan& plan, const Bindings& b) {
  AttnParams p = plan.attn;
  p.q = b.q.data;
  p.k = b.k.data;
  p.v = b.v.data;
  strides3(p.q_stride, b.q);
  strides3(p.k_stride, b.k);
  strides3(p.v_stride, b.v);
  if (b.dout.defined()) {  // backward: reads the LSE as lse2 (the prep pass's); p.lse stays null
    p.dout = b.dout.data;
    strides3(p.do_stride, b.dout);
    p.delta = ws_f32(b, WorkspaceId::Delta);
    p.lse2 = ws_f32(b, WorkspaceId::Lse2);
    p.dq_accum = ws_f32(b, WorkspaceId::DqAccum);
    p.dq_order = static_cast<int*>(ws(b, WorkspaceId::DqOrder).data);  // null unless deterministic
    p.dk = b.dk.data;
    p.dv = b.dv.data;
    strides3(p.dk_stride, b.dk);
    strides3(p.dv_stride, b.dv);
  } else {
    p.o = b.o.data;
    strides3(p.o_stride, b.o);
    p.lse = static_cast<float*>(b.lse.data);
    p.o_part = ws_f32(b, WorkspaceId::OPart);  // null unless split-KV
    p.lse_part = ws_f32(b, WorkspaceId::LsePart);
    p.tile_counter = static_cast<int*>(ws(b, WorkspaceId::TileCounter).data);  // null unless persistent
    p.v_flag = static_cast<int*>(ws(b, WorkspaceId::VFlag).data);  // null without the V-check pass
    p.block_max = static_cast<float*>(b.block_max.data);  // null but in the gate-training forward
    p.pooled = static_cast<float*>(b.pooled.data);
  }
  p.block_state = static_cast<const unsigned char*>(ws(b, WorkspaceId::BlockStates).data);
  if (b.page_table.defined()) {
    p.page_table = static_cast<const int*>(b.page_table.data);
    p.page_table_stride = b.page_table.stride[0];
    p.max_pages = static_cast<int>(b.page_table.size[1]);
    // The pool (int32 table entries name no page past INT_MAX).
    p.num_pages = static_cast<int>(std::min<int64_t>({b.k.size[0], b.v.size[0], INT32_MAX}));
  }
  if (b.cu_q.defined()) {
    p.cu_q = static_cast<const int*>(b.cu_q.data);
    p.cu_k = static_cast<const int*>(b.cu_k.data);
    p.q_total = static_cast<int>(b.q_total);
  }
  if (b.kv_lens.defined()) {
    p.kv_lens = b.kv_lens.data;
    p.kv_lens_stride = b.kv_lens.stride[0];
    p.kv_lens_int32 = b.kv_lens.elem_size == 4;
  }
  return p;
}

VariantArgs captured_args(const Bindings& b) {
  VariantArgs va{};
  for (size_t i = 0; i < b.captured.size(); ++i) {
    const CapturedRef& c = b.captured[i];
    BufferArg& a = va.buf[i];
    a.data = c.value.data;
    a.grad = static_cast<float*>(c.grad.data);
    for (int d = 0; d < c.value.rank; ++d) {
      a.stride[d] = c.value.stride[d];
      a.size[d] = c.value.size[d];
      a.gstride[d] = c.grad.defined() ? c.grad.stride[d] : 0;
    }
  }
  return va;
}

BwdRowParams row_params(const plan::LaunchPlan& plan, const Bindings& b) {
  BwdRowParams r = plan.rows;
  r.dout = b.dout.data;
  strides3(r.do_stride, b.dout);
  if (plan.workspace(WorkspaceId::Delta)) {  // row statistics (softmax)
    r.o = b.o.data;
    strides3(r.o_stride, b.o);
    r.lse = static_cast<const float*>(b.lse.data);
    r.dlse = static_cast<const float*>(b.dlse.data);
    r.delta = ws_f32(b, WorkspaceId::Delta);
    r.lse2 = ws_f32(b, WorkspaceId::Lse2);
  }
  r.dq_accum = ws_f32(b, WorkspaceId::DqAccum);
  r.dq_order = static_cast<int*>(ws(b, WorkspaceId::DqOrder).data);
  r.dq = b.dq.data;
  strides3(r.dq_stride, b.dq);
  if (b.cu_q.defined()) {
    r.cu_q = static_cast<const int*>(b.cu_q.data);
    r.q_total = static_cast<int>(b.q_total);
  }
  return r;
}

}  // namespace

void* CallArgs::at(Arg a) {
  switch (a) {
    case Arg::Attn: return &attn;
    case Arg::Variant: return &captured;
    case Arg::TmaQ: return &tq;
    case Arg::TmaK: return &tk;
    case Arg::TmaV: return &tv;
    case Arg::TmaDo: return &tdo;
    case Arg::Rows: return &rows;
    case Arg::BlockStates: return &block_states;
    case Arg::Linear: return &linear;
  }
  return nullptr;
}

CallArgs call_args(const plan::LaunchPlan& plan, const Bindings& b) {
  CallArgs v{};
  v.attn = attn_params(plan, b);
  v.captured = captured_args(b);
  if (b.dout.defined()) v.rows = row_params(plan, b);
  v.block_states = plan.block_states;
  v.block_states.state = static_cast<unsigned char*>(ws(b, WorkspaceId::BlockStates).data);
  v.block_states.rest = static_cast<const unsigned char*>(ws(b, WorkspaceId::RestStates).data);
  return v;
}

void run(const plan::LaunchPlan& plan, const ir::Variant& variant, const Bindings& b) {
  CallArgs v = call_args(plan, b);
  for (const plan::Step& step : plan.steps) {
    if (step.fills_workspace && b.ready[static_cast<int>(step.fills)]) continue;
    if ((step.spec.pool_block > 0 && !b.block_max.defined()) ||
        (step.spec.kind == codegen::Kind::PoolMap && !b.pooled.defined()))  // (writes to null)
      throw std::invalid_argument("runner: a gate-training forward without its block_max or "
                                  "pooled tensor");
    const codegen::KernelAbi& abi = codegen::abi_of(step.spec);
    void* args[8];
    int n = 0;
    for (Arg a : abi.args) {
      if (a == Arg::TmaQ) v.tq = tma_map(b.q, step.spec.block_m);
      // Paged K and V load in boxes of a page at most (sm90/fwd.h).
      const int kv_box = step.spec.layout == codegen::Layout::Paged
                             ? std::min(step.spec.block_n, step.spec.page_size)
                             : step.spec.block_n;
      if (a == Arg::TmaK) v.tk = tma_map(b.k, kv_box);
      if (a == Arg::TmaV) v.tv = tma_map(b.v, kv_box);
      if (a == Arg::TmaDo) v.tdo = tma_map(b.dout, step.spec.block_m);
      args[n++] = v.at(a);
    }
    v.rows.lanes = step.row_lanes;
    // The rest's table (a block tensor's variant) is filled by the block-state pass of the
    // variant without the lookup, into its own workspace.
    const ir::Variant* step_variant = step.spec.of_rest ? variant.without_block_mask.get() : &variant;
    BlockStateParams& bs = v.block_states;
    const WorkspaceId table = step.spec.of_rest ? WorkspaceId::RestStates : WorkspaceId::BlockStates;
    bs.state = static_cast<unsigned char*>(ws(b, table).data);
    if (step.spec.of_rest) {  // its own table's batch and head dependence
      bs.per_batch = plan.block_states.rest_per_batch;
      bs.per_head = plan.block_states.rest_per_head;
    } else {
      bs.per_batch = plan.block_states.per_batch;
      bs.per_head = plan.block_states.per_head;
    }
    launch(step, step.spec.uses_variant() ? step_variant : nullptr, args, b.stream, b.device);
  }
}

void run_linear(const plan::LaunchPlan& plan, const LinearBindings& b) {
  CallArgs v{};
  LinearParams& p = v.linear;
  p = plan.linear;
  p.q = b.q.data, p.k = b.k.data, p.v = b.v.data, p.o = b.o.data;
  strides3(p.q_stride, b.q);
  strides3(p.k_stride, b.k);
  strides3(p.v_stride, b.v);
  strides3(p.o_stride, b.o);
  p.a = static_cast<const float*>(b.a.data);
  if (p.per_channel && reinterpret_cast<uintptr_t>(p.a) % 16 != 0)  // (16-byte cp.async copies)
    throw std::invalid_argument("runner: per-channel decays must be 16-byte aligned");
  p.state = static_cast<float*>(b.state.data);
  p.state0 = static_cast<const float*>(b.state0.data);
  p.chunk_states = b.chunk_states.data;
  p.cu_seqlens = static_cast<const int*>(b.cu_seqlens.data);
  p.chunk_map = static_cast<const int*>(b.chunk_map.data);
  if ((p.n_seqs > 0) != (p.cu_seqlens && p.chunk_map))
    throw std::invalid_argument("runner: a linear attention plan for packed sequences takes "
                                "cu_seqlens and the chunk map, and only it");
  if (b.dout.defined()) {
    p.dout = b.dout.data, p.dq = b.dq.data, p.dk = b.dk.data, p.dv = b.dv.data;
    strides3(p.do_stride, b.dout);
    strides3(p.dq_stride, b.dq);
    strides3(p.dk_stride, b.dk);
    strides3(p.dv_stride, b.dv);
    p.da = static_cast<float*>(b.da.data);
    p.dstate = static_cast<const float*>(b.dstate.data);
    p.dstate0 = static_cast<float*>(b.dstate0.data);
    p.dchunk_states = b.dchunk_states.data;
  }
  for (const plan::Step& step : plan.steps) {
    if (!step.spec.is_linear())
      throw std::invalid_argument("runner: a linear attention plan with a " + step.spec.describe());
    const bool backward = step.spec.kind == codegen::Kind::LinearDState ||
                          step.spec.kind == codegen::Kind::LinearGrads;
    if ((step.spec.kind == codegen::Kind::LinearStep && !p.state) ||
        (step.spec.kind != codegen::Kind::LinearStep && !p.chunk_states) ||
        (backward && (!p.dout || !p.dq || !p.dk || !p.dv || !p.da || !p.dchunk_states)))
      throw std::invalid_argument("runner: " + step.spec.describe() + " without its state tensor");
    void* args[1] = {v.at(Arg::Linear)};
    launch(step, nullptr, args, b.stream, b.device);
  }
}

}  // namespace ae::runner
