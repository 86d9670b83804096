#include "plan/planner.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "codegen/emit_variant.h"
#include "common/shapes.h"
#include "sm80/shapes.h"
#include "sm90/shapes.h"
#include "plan/tile_tables.h"

namespace ae::plan {
namespace {

using codegen::Family;
using codegen::Kind;
using codegen::KernelSpec;

LaunchPlan refuse(std::string reason) {
  LaunchPlan p;
  p.reason = std::move(reason);
  return p;
}

// What every family needs of the call; empty when the fused path can take it.
std::string unfit_inputs(const Problem& pb, const DeviceCaps& dev) {
  if (pb.dtype != ElemType::BFloat16 && pb.dtype != ElemType::Float16)
    return fmt::format("{} inputs have no fused kernel (bf16 and fp16 do)", elem_name(pb.dtype));
  if (pb.captured.size() > static_cast<size_t>(kMaxBuffers))
    return fmt::format("{} captured tensors; kernels take at most {}", pb.captured.size(),
                       kMaxBuffers);
  for (const CapturedTensor& t : pb.captured)
    if (t.rank > kMaxRank || !codegen::has_kernel_load(t.dtype))
      return fmt::format("a captured tensor of rank {} and dtype {} has no kernel load", t.rank,
                         t.dtype);
  // Kernels index rows, heads and batches in 32 bits (the README says so).
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  if (pb.q_len > kMax || pb.kv_len > kMax || pb.batch * pb.q_heads > kMax)
    return fmt::format("sequence lengths ({}, {}) or batch x heads ({}) past 32-bit indices",
                       pb.q_len, pb.kv_len, pb.batch * pb.q_heads);
  if (dev.vendor == jit::Vendor::kAmd) {
    if (dev.gfx != "gfx90a")  // CDNA2 (MI210, MI250); gfx942 (MI300) is not built yet
      return fmt::format("{}: no kernel family for this AMD GPU (the fused kernels are built for "
                         "gfx90a)", dev.label());
    return {};
  }
  if (dev.major < 8)
    return fmt::format("compute capability {}.{}: the kernels need 8.0 or newer", dev.major,
                       dev.minor);
  return {};
}

// The first candidate whose shared memory, plus `extra` bytes, fits the device, its arch set;
// or why none does.
bool pick(const Candidates& c, const DeviceCaps& dev, int64_t extra, KernelSpec* out,
          std::string* why) {
  if (c.specs.empty()) {
    *why = c.refusal;
    return false;
  }
  for (const KernelSpec& s : c.specs)
    if (smem_bytes(s) + extra <= dev.smem_per_block) {
      *out = s;
      if (out->arch.empty()) out->arch = dev.arch();
      return true;
    }
  const KernelSpec& last = c.specs.back();
  *why = fmt::format("{} needs {} bytes of shared memory, the device allows {}", last.describe(),
                     smem_bytes(last), dev.smem_per_block);
  return false;
}

}  // namespace

int64_t grad_region_bytes(const Problem& pb) {
  int64_t n = 0;
  for (const CapturedTensor& t : pb.captured)
    if (t.wants_grad) n += t.numel;
  return 4 * n;  // fp32
}

namespace {

// The main kernel's spec: the families that can run `kind` on the device, in order of
// preference (Hopper: the sm90 forward where its table has a configuration, unless the
// overrides disable it; the mma.sync templates everywhere from sm_80 on).
bool main_spec(const PlanRequest& r, Kind kind, KernelSpec* spec, std::string* why) {
  const Problem& pb = r.problem;
  TableQuery q;
  q.d_qk = static_cast<int>(pb.d_qk);
  q.d_v = static_cast<int>(pb.d_v);
  q.bf16 = pb.dtype == ElemType::BFloat16;
  q.score_loads = r.variant.score_loads;
  q.mask_loads = r.variant.mask_loads;
  q.mask_mod_loads = r.variant.mask_loads;
  q.score_pow = r.variant.score_pow;
  if (pb.sparsity == BlockSparsity::BlockTensor) q.mask_block_k = r.variant.blocks.block_k;
  q.captured_grads = kind == Kind::Backward &&
                  std::any_of(pb.captured.begin(), pb.captured.end(),
                              [](const CapturedTensor& t) { return t.wants_grad; });
  const bool custom = r.variant.normalize == ir::Normalize::Custom;
  q.softmax = r.variant.normalize == ir::Normalize::Softmax || (custom && r.variant.log_domain);
  q.score_special = r.variant.score_special || custom;  // (its weight and stat per score)
  // A custom normalization's extra work per score (its weight and stat functions) and per row
  // (finish) spilled on the widest tiles (compile-all check): the log domain skips the wide
  // ones, the linear takes the tiles of a score_mod that loads per score. Not yet measured.
  if (custom) (r.variant.log_domain ? q.mask_loads : q.score_loads) = true;
  const bool hopper = r.device.major == 9 && r.device.minor == 0;
  // A forward of at most 16 query rows (decode, or a GQA group packed as rows) runs the decode
  // template of the sm80 family, on Hopper too: the prefill tiles are 64-128 rows. Opt-in
  // (AE_DECODE) until the template has run on a GPU.
  const bool decode = kind == Kind::Forward && pb.q_len <= sm80::kDecodeBlockM && !custom &&
                      r.overrides.enable_decode && r.device.vendor == jit::Vendor::kNvidia &&
                      pb.pool_block == 0;
  // MLA's shape (a latent head of 576 columns whose first 512 are V) on Hopper: the MLA decode
  // template, alone (the others' head dims stop at 256).
  const bool mla_dims = kind == Kind::Forward && sm90::mla_has(q.d_qk, q.d_v);
  const bool mla = mla_dims && pb.v_in_k && hopper && !custom &&
                   pb.kv_layout != KvLayout::Varlen && !r.overrides.disable_sm90 && pb.pool_block == 0;
  std::vector<Family> families;
  if (r.device.vendor == jit::Vendor::kAmd) {  // gfx90a (unfit_inputs refused other targets)
    families.push_back(Family::Gfx90a);
  }
  if (decode && !mla) families.push_back(Family::Sm80);
  if (hopper && (kind == Kind::Forward ? !r.overrides.disable_sm90 : !r.overrides.disable_sm90_bwd))
    families.push_back(Family::Sm90);
  if (!decode && !mla && r.device.vendor == jit::Vendor::kNvidia) families.push_back(Family::Sm80);
  if (r.family) {
    if (std::find(families.begin(), families.end(), *r.family) == families.end()) {
      *why = fmt::format("no {} {} kernel on {}", codegen::family_name(*r.family),
                         codegen::kind_name(kind), r.device.label());
      return false;
    }
    families = {*r.family};
  }
  std::string reasons;
  for (Family f : families) {
    const bool fwd = kind == Kind::Forward;
    Candidates c = f == Family::Gfx90a
                       ? (fwd ? gfx90a_forward(q, pb.q_len <= 64) : gfx90a_backward(q))
                   : f == Family::Sm90 ? (!fwd ? sm90_backward(q)
                                          : mla ? sm90_mla_forward(q)
                                                : sm90_forward(q, r.overrides))
                   : fwd               ? sm80_forward(q, r.overrides)
                                       : sm80_backward(q, r.overrides);
    if (f == Family::Sm80 && decode) {  // the decode tiles first, the prefill ones behind them
      Candidates d = decode_forward(q, r.overrides);
      d.specs.insert(d.specs.end(), c.specs.begin(), c.specs.end());
      c = std::move(d);
    }
    // Paged: the sm90 forward's TMA boxes need whole pages or whole tiles. The sm80 family's
    // cp.async loaders address each row through the table, any page size (make_plan: multiples
    // of 8), the pages of a tile held by a warp's lanes (sm80/tile_io.h tile_pages): where no
    // sm90 tile fits the pages, the sm80 family takes them. The gfx90a loaders look each row's
    // page up (gfx90a/tile_io.h load_paged): any tile.
    if (pb.kv_layout == KvLayout::Paged) {
      const int ps = static_cast<int>(pb.page_size);
      auto unfit = [&](const KernelSpec& s) {
        return f == Family::Gfx90a ? false
               : f == Family::Sm90 ? !(ps % s.block_n == 0 || s.block_n % ps == 0)
                                   : sm80::paged_tile_columns(s.block_n, ps) > 32;
      };
      c.specs.erase(std::remove_if(c.specs.begin(), c.specs.end(), unfit), c.specs.end());
      if (c.specs.empty() && c.refusal.empty())
        c.refusal = fmt::format("no {} forward tile of keys fits pages of {} rows",
                                codegen::family_name(f), ps);
    }
    // The gate-training forward: tiles whose keys a pooled block divides, or that divide it
    // (nvidia/mma_rows.h store_block_max).
    if (pb.pool_block > 0) {
      const int64_t pool = pb.pool_block;
      c.specs.erase(std::remove_if(c.specs.begin(), c.specs.end(),
                                   [&](const KernelSpec& s) {
                                     return s.block_n % pool != 0 && pool % s.block_n != 0;
                                   }),
                    c.specs.end());
      for (KernelSpec& s : c.specs) s.pool_block = static_cast<int>(pool);
      if (c.specs.empty() && c.refusal.empty())
        c.refusal = fmt::format("no {} forward tile of keys fits pooled blocks of {} keys",
                                codegen::family_name(f), pool);
    }
    // The layout before picking: shared memory depends on it (a paged forward's table window).
    for (KernelSpec& s : c.specs) {
      s.layout = pb.kv_layout == KvLayout::KvLengths ? codegen::Layout::KvLengths
                 : pb.kv_layout == KvLayout::Paged   ? codegen::Layout::Paged
                 : pb.kv_layout == KvLayout::Varlen  ? codegen::Layout::Varlen
                                                     : codegen::Layout::Dense;
      s.page_size = pb.kv_layout == KvLayout::Paged ? static_cast<int>(pb.page_size) : 0;
    }
    std::string w;
    // Gradients of captured tensors: a copy in shared memory where the first candidate that
    // has room for it left over (a smaller tile than the table's first pick, if need be:
    // global atomics per score cost far more), else global atomics.
    const int64_t grads = kind == Kind::Backward ? grad_region_bytes(pb) : 0;
    const bool shared = grads > 0 && !r.overrides.global_grads && pick(c, r.device, grads, spec, &w);
    if (shared || pick(c, r.device, 0, spec, &w)) {
      for (const CapturedTensor& t : pb.captured) spec->buffer_dtypes.push_back(t.dtype);
      if (kind == Kind::Backward) {  // gradient additions only for the tensors that want them
        for (const CapturedTensor& t : pb.captured) spec->buffer_grads.push_back(t.wants_grad);
        spec->deterministic = pb.deterministic;
      }
      spec->grad_sink = shared ? codegen::GradSink::Shared : codegen::GradSink::Global;
      spec->plain_loads = r.overrides.plain_loads;
      spec->trust_v = r.overrides.trust_v && kind == Kind::Forward;
      spec->mask_load_mode = kind == Kind::Forward ? r.overrides.mask_load_mode : -1;
      // The sm90 backward of a masked variant on packed sequences spills at ptxas's default
      // register-usage level (20 bytes) and fits at 0 (compile-all), where the runtime's
      // fallback would land after a second compile.
      if (kind == Kind::Backward && spec->family == Family::Sm90 &&
          spec->layout == codegen::Layout::Varlen && r.variant.has_mask && spec->reg_level < 0)
        spec->reg_level = 0;
      return true;
    }
    reasons += (reasons.empty() ? "" : "; ") + w;
  }
  if (mla_dims && !mla)
    reasons += "; head dims (576, 512) run the MLA decode kernel where V is K's first 512 columns "
               "(v = kv[..., :512], the same memory), on an sm_90 GPU with the sm90 kernels on "
               "(not AE_DISABLE_SM90), with softmax or none, not on packed sequences";
  *why = reasons;
  return false;
}

// The forward's head group (common/tile_scheduler.h). Without a mask every CTA does the same
// work and one head at a time keeps K and V in L2 best: 1. With one, as many heads as fit
// their K and V, per_head bytes each, into a budget of L2. Measured on the H200
// (bench/RESULTS.md): the sm90 forward did best at 8 MB (4 heads at 4k tokens, 1 at 16k), the
// sm80 one, at half its speed and so half the bandwidth, with 32 MB (16 and 4). gfx90a: half
// of a GCD's 8 MB L2, not measured.
int head_group(Family family, bool masked, long long per_head, int heads, int override_group) {
  if (override_group > 0) return override_group;
  if (!masked) return 1;
  const long long budget = (family == Family::Sm90 ? 8ll : family == Family::Gfx90a ? 4ll : 32ll) << 20;
  return static_cast<int>(std::clamp<long long>(budget / std::max(1ll, per_head), 1, heads));
}

AttnParams shape_params(const Problem& pb) {
  AttnParams a{};
  a.batch = static_cast<int>(pb.batch);
  a.q_heads = static_cast<int>(pb.q_heads);
  a.kv_heads = static_cast<int>(pb.kv_heads);
  a.group = static_cast<int>(pb.group());
  a.q_len = static_cast<int>(pb.q_len);
  a.kv_len = static_cast<int>(pb.kv_len);
  a.scale = static_cast<float>(pb.scale);
  a.scale_log2 = static_cast<float>(pb.scale * 1.4426950408889634);
  a.kv_splits = 1;
  a.d_qk = static_cast<int>(pb.d_qk);
  a.d_v = static_cast<int>(pb.d_v);
  return a;
}

unsigned u(int64_t x) { return static_cast<unsigned>(x); }

// A step running one of the variant-free or portable kernels of templates/common.
Step common_step(const PlanRequest& r, Kind kind, bool bf16, int threads) {
  Step s;
  s.spec.kind = kind;
  s.spec.family = Family::Common;
  s.spec.arch = r.device.arch();
  s.spec.bf16 = bf16;
  s.spec.warps = threads / 32;
  s.threads = threads;
  return s;
}

// The forward's split-KV count: when the query tiles (decode: one per head and batch) leave
// SMs idle, the key blocks are cut into ranges so that tiles x ranges fill one wave, each
// range at least kMinSplitBlocks blocks long (a range's partial O costs a write and a read).
int kv_splits(const AttnParams& a, const DeviceCaps& dev, int override_splits) {
  constexpr int kMinSplitBlocks = 4, kMaxSplits = 64;
  const long long tiles = static_cast<long long>(a.n_q_blocks) * a.q_heads * a.batch;
  int n = override_splits;
  if (n <= 0) {
    if (dev.multiprocessors <= 0 || tiles >= dev.multiprocessors) return 1;
    n = static_cast<int>(std::min<long long>({dev.multiprocessors / tiles,
                                              a.n_kv_blocks / kMinSplitBlocks, kMaxSplits}));
  }
  return std::clamp(n, 1, std::max(1, a.n_kv_blocks));
}

// The persistent sm90 forward's CTAs (common/tile_scheduler.h PersistentTiles), where the tiles
// outnumber them; 0: a CTA per tile. Opt-in (AE_PERSISTENT): one per SM (the forward's shared
// memory and registers hold one) or a given count. Off by default: on the H200 it measured no
// faster than a CTA per tile, plain D128 slower (bench/RESULTS.md). A split-KV launch is one
// wave already.
int persistent_ctas(const PlanRequest& r, const KernelSpec& spec, const AttnParams& a) {
  if (spec.family != Family::Sm90 || spec.kind != Kind::Forward || spec.kv_split || spec.mla)
    return 0;
  // (Its tiles are the grid's: packed sequences' tiles past their queries would be drawn too.)
  if (spec.layout == codegen::Layout::Varlen) return 0;
  if (r.overrides.persistent == 0) return 0;
  const int ctas = r.overrides.persistent > 0 ? r.overrides.persistent : r.device.multiprocessors;
  const long long tiles = static_cast<long long>(a.n_q_blocks) * a.q_heads * a.batch;
  return ctas > 0 && tiles > ctas ? ctas : 0;
}

// Split-KV: the main kernel's grid gets kv_splits ranges per batch (the caller launches it
// before the step this returns), its partial outputs go to two workspaces, and the combine
// step merges them. None when one range does.
std::optional<Step> add_kv_splits(const PlanRequest& r, const KernelSpec& main, LaunchPlan& plan) {
  AttnParams& a = plan.attn;
  const Problem& pb = r.problem;
  const int n = kv_splits(a, r.device, r.overrides.kv_splits);  // <= n_kv_blocks
  // The combine merges softmax rows; a custom normalization's finish needs the whole row; the
  // gate-training forward's block maxima are the whole row's.
  if (n <= 1 || r.variant.normalize == ir::Normalize::Custom || pb.pool_block > 0)
    return std::nullopt;
  a.kv_split_blocks = (a.n_kv_blocks + n - 1) / n;
  a.kv_splits = (a.n_kv_blocks + a.kv_split_blocks - 1) / a.kv_split_blocks;  // none empty, >= 2
  a.row_stats = r.variant.normalize == ir::Normalize::Softmax;
  plan.workspaces.push_back(
      {WorkspaceId::OPart, {a.kv_splits, pb.batch, pb.q_heads, pb.q_len, pb.d_v}, ElemType::Float32, ""});
  plan.workspaces.push_back(
      {WorkspaceId::LsePart, {a.kv_splits, pb.batch, pb.q_heads, pb.q_len}, ElemType::Float32, ""});
  Step s = common_step(r, Kind::FwdCombine, main.bf16, kCombineThreads);
  // The combine addresses O's and the LSE's rows only: dense but for packed sequences (per-batch
  // key lengths and pages are K's and V's).
  s.spec.layout = main.layout == codegen::Layout::Varlen ? codegen::Layout::Varlen
                                                         : codegen::Layout::Dense;
  const int64_t rows = pb.batch * pb.q_heads * pb.q_len, per_cta = kCombineThreads / r.device.warp_size;
  s.grid = {u((rows + per_cta - 1) / per_cta), 1, 1};
  return s;
}

// The table's strides in AttnParams and its facts in BlockStateParams.
void set_table(const KernelSpec& main, bool per_batch, bool per_head, LaunchPlan& plan) {
  AttnParams& a = plan.attn;
  const long long per_tile = static_cast<long long>(a.n_q_blocks) * a.n_kv_blocks;
  a.state_stride_h = per_head ? per_tile : 0;
  a.state_stride_b = per_batch ? per_tile * (per_head ? a.q_heads : 1) : 0;
  plan.block_states.block_m = main.block_m;
  plan.block_states.block_n = main.block_n;
  plan.block_states.per_batch = per_batch;
  plan.block_states.per_head = per_head;
}

// A mask's block-state pass (common/block_state.h block_state: the mask evaluated per score)
// into workspace `id`, a table per batch and per head where it depends on them. The same
// table for every call with the same shapes and, where the mask reads captured tensors
// (document ids), the same tensors unchanged: training steps that keep their ids build it
// once (it cost a pass over every score per call). (Not packed sequences': their lengths are
// device data, so the table is built per call.)
Step& add_mask_pass(const PlanRequest& r, const KernelSpec& main, LaunchPlan& plan, WorkspaceId id,
                    const std::string& key, bool per_batch, bool per_head, bool reads_buffers) {
  const AttnParams& a = plan.attn;
  const bool varlen = main.layout == codegen::Layout::Varlen;
  const int nb = per_batch ? a.batch : 1, nh = per_head ? a.q_heads : 1;
  Workspace ws{id, {nb * nh, a.n_q_blocks, a.n_kv_blocks}, ElemType::Other, ""};
  if (!varlen)
    ws.cache_key = fmt::format("{}|{}|{}|{}x{}h{}.{}|{}|{}", key, a.q_len, a.kv_len, main.block_m,
                               main.block_n, plan.block_states.half_m, plan.block_states.half_n,
                               nb, nh);
  ws.key_by_captured = reads_buffers;
  plan.workspaces.push_back(ws);
  Step s = common_step(r, Kind::BlockState, main.bf16, kBlockStateThreads);
  if (varlen) s.spec.layout = codegen::Layout::Varlen;
  s.spec.buffer_dtypes = main.buffer_dtypes;
  s.grid = {u(a.n_kv_blocks), u(a.n_q_blocks), u(nb * nh)};
  s.fills_workspace = true;
  s.fills = id;
  plan.steps.push_back(s);
  return plan.steps.back();
}

// A mask that looks up a block tensor (ir/block_mask.h): the table of the rest of the mask
// (the variant without the lookup; cached as a mask_mod's table is, and none where the rest
// keeps everything), then the call's table from the tensor's codes and it, per call (a thread
// per tile: common/block_state.h block_state_from_blocks).
void add_block_tensor_states(const PlanRequest& r, const KernelSpec& main, LaunchPlan& plan) {
  const VariantTraits& v = r.variant;
  const AttnParams& a = plan.attn;
  const bool varlen = main.layout == codegen::Layout::Varlen;
  if (v.rest_has_mask) {
    const bool per_batch = v.rest_per_batch || varlen;
    add_mask_pass(r, main, plan, WorkspaceId::RestStates, v.rest_key, per_batch, v.rest_per_head,
                  v.rest_reads_buffers)
        .spec.of_rest = true;
    plan.workspaces.back().key_ignores_captured = v.blocks.buffer;  // (not the rest's input)
    plan.block_states.rest_per_batch = per_batch;
    plan.block_states.rest_per_head = v.rest_per_head;
  }
  const bool per_batch = v.blocks.by_batch || (v.rest_has_mask && v.rest_per_batch) || varlen;
  const bool per_head = v.blocks.head_div != 0 || (v.rest_has_mask && v.rest_per_head);
  set_table(main, per_batch, per_head, plan);
  const int64_t tables = (per_batch ? a.batch : 1) * (per_head ? a.q_heads : 1);
  plan.workspaces.push_back(
      {WorkspaceId::BlockStates, {tables, a.n_q_blocks, a.n_kv_blocks}, ElemType::Other, ""});
  Step s = common_step(r, Kind::BlockStateBlocks, main.bf16, kBlockStateThreads);
  if (varlen) s.spec.layout = codegen::Layout::Varlen;
  s.spec.buffer_dtypes = main.buffer_dtypes;
  s.spec.blocks_buffer = v.blocks.buffer;
  s.spec.blocks_q = v.blocks.block_q;
  s.spec.blocks_k = v.blocks.block_k;
  s.spec.blocks_by_batch = v.blocks.by_batch;
  s.spec.blocks_head_div = v.blocks.head_div;
  s.spec.blocks_codes = v.blocks.codes;
  const int64_t tiles = tables * a.n_q_blocks * a.n_kv_blocks;
  s.grid = {u((tiles + kBlockStateThreads - 1) / kBlockStateThreads), 1, 1};
  plan.steps.push_back(s);
}

// Block counts for the main kernel's tiles; with a mask, the block-state step and its table.
void add_block_states(const PlanRequest& r, const KernelSpec& main, LaunchPlan& plan) {
  AttnParams& a = plan.attn;
  a.n_q_blocks = static_cast<int>((a.q_len + main.block_m - 1) / main.block_m);
  a.n_kv_blocks = static_cast<int>((a.kv_len + main.block_n - 1) / main.block_n);
  if (r.problem.sparsity == BlockSparsity::None) return;
  // The sm90 forward's consumer warpgroups take 64 query rows each: its tables code the
  // halves too (common/block_walk.h kBlockHalves), so that a warpgroup whose rows keep all of
  // a block skips the mask, and one whose rows keep nothing (without the overlap) drops the
  // scores unevaluated. The sm90 backward's MMA warpgroups take 64 keys each: the same for
  // halves of the keys where the kernel reads them (KernelSpec::key_halves).
  const bool halves = main.family == Family::Sm90 && main.kind == Kind::Forward && !main.mla &&
                      main.block_m == 2 * 64;
  plan.block_states.half_m = halves ? 64 : 0;
  plan.block_states.half_n = main.key_halves ? 64 : 0;
  if (r.problem.sparsity == BlockSparsity::BlockTensor) return add_block_tensor_states(r, main, plan);
  const VariantTraits& v = r.variant;
  // Packed sequences: a table per batch, whose tiles past the sequence's own lengths are empty
  // (the backward's masked walks skip them: common/block_state.h).
  const bool per_batch = v.mask_per_batch || main.layout == codegen::Layout::Varlen;
  set_table(main, per_batch, v.mask_per_head, plan);
  add_mask_pass(r, main, plan, WorkspaceId::BlockStates, v.key, per_batch, v.mask_per_head,
                v.mask_reads_buffers);
}

// The V-check pass (common/v_check.h) before an NVIDIA forward that would scan the V of its
// tiles with masked keys (nvidia/exact_pv.h): a mask_mod or a score_mod writing -inf, and
// enough query rows per key head (q_len x group) that one more read of V costs little beside
// the forward's GEMMs. AE_V_CHECK=0/1 overrides the rule (still never where the checks are
// compiled out). None on gfx90a (its forward scans as before).
bool wants_v_check(const PlanRequest& r, const KernelSpec& main) {
  constexpr int64_t kMinRowsPerKvHead = 8192;
  if (main.trust_v || main.family == Family::Gfx90a || r.overrides.v_check == 0) return false;
  // v_check.h reads dense rows; another layout would need its own addressing
  if (r.problem.kv_layout != KvLayout::Dense) return false;
  if (r.overrides.v_check == 1) return true;
  const Problem& pb = r.problem;
  return (r.variant.has_mask || r.variant.score_masks) && pb.q_len * pb.group() >= kMinRowsPerKvHead;
}

void add_v_check(const PlanRequest& r, const KernelSpec& main, LaunchPlan& plan) {
  constexpr int kThreads = 256, kCtasPerSm = 8;
  const Problem& pb = r.problem;
  Workspace flag{WorkspaceId::VFlag, {1}, ElemType::Int32, ""};
  flag.zeroed = true;
  plan.workspaces.push_back(flag);
  Step s = common_step(r, Kind::VCheck, main.bf16, kThreads);
  const int64_t heads = std::min<int64_t>(pb.batch * pb.kv_heads, 65535);
  const int64_t rows_per_cta = kThreads / (pb.d_v / 8);
  const int64_t ctas = std::max<int64_t>(1, r.device.multiprocessors) * kCtasPerSm;
  const int64_t x = std::clamp<int64_t>((ctas + heads - 1) / heads, 1,
                                        (pb.kv_len + rows_per_cta - 1) / rows_per_cta);
  s.grid = {u(x), u(heads), 1};
  plan.steps.push_back(s);
}

Step main_step(const Problem& pb, const KernelSpec& spec, Dim3 grid) {
  Step s;
  s.spec = spec;
  s.grid = grid;
  s.threads = spec.threads();
  s.smem = smem_bytes(spec);
  if (spec.grad_sink == codegen::GradSink::Shared)  // the gradients' copy, past the template's
    s.smem += static_cast<int>(grad_region_bytes(pb));
  return s;
}

// A backward row pass over every query row, row_lanes lanes per row of `dim` 16-bit values.
Step row_pass(const PlanRequest& r, Kind kind, int dim) {
  const Problem& pb = r.problem;
  Step s = common_step(r, kind, pb.dtype == ElemType::BFloat16, kRowPassThreads);
  s.row_lanes = row_pass_lanes(dim);
  const int64_t rows = pb.batch * pb.q_heads * pb.q_len, per_cta = kRowPassThreads / s.row_lanes;
  s.grid = {u((rows + per_cta - 1) / per_cta), 1, 1};
  return s;
}

// A custom log-domain normalization's row terms (common/bwd_rows.h bwd_rows_custom): one
// thread per query row, generated from the variant (and adding into the gradients of the
// captured tensors its finish reads, as the main kernel's spec lists them).
Step custom_rows_pass(const PlanRequest& r, const KernelSpec& main) {
  const Problem& pb = r.problem;
  constexpr int kThreads = 128;
  Step s = common_step(r, Kind::BwdRowsCustom, main.bf16, kThreads);
  s.spec.buffer_dtypes = main.buffer_dtypes;
  s.spec.buffer_grads = main.buffer_grads;
  s.row_lanes = 1;
  const int64_t rows = pb.batch * pb.q_heads * pb.q_len;
  s.grid = {u((rows + kThreads - 1) / kThreads), 1, 1};
  return s;
}

}  // namespace

const char* workspace_name(WorkspaceId id) {
  switch (id) {
    case WorkspaceId::BlockStates: return "block_states";
    case WorkspaceId::DqAccum: return "dq_accum";
    case WorkspaceId::Delta: return "delta";
    case WorkspaceId::Lse2: return "lse2";
    case WorkspaceId::DqOrder: return "dq_order";
    case WorkspaceId::OPart: return "o_part";
    case WorkspaceId::LsePart: return "lse_part";
    case WorkspaceId::TileCounter: return "tile_counter";
    case WorkspaceId::VFlag: return "v_flag";
    case WorkspaceId::RestStates: return "rest_states";
  }
  return "?";
}

const Workspace* LaunchPlan::workspace(WorkspaceId id) const {
  for (const Workspace& w : workspaces)
    if (w.id == id) return &w;
  return nullptr;
}

std::string LaunchPlan::describe() const {
  if (!ok) return "reference: " + reason;
  std::string out;
  for (const Step& s : steps)
    out += fmt::format("{} grid ({},{},{}) threads {} smem {}\n", s.spec.describe(), s.grid.x,
                       s.grid.y, s.grid.z, s.threads, s.smem);
  for (const Workspace& w : workspaces) {
    std::string shape;
    for (int64_t d : w.shape) shape += fmt::format("{}{}", shape.empty() ? "" : ", ", d);
    out += fmt::format("workspace {} [{}]{}\n", workspace_name(w.id), shape,
                       w.cache_key.empty() ? "" : " (kept across calls)");
  }
  return out;
}

LaunchPlan make_plan(const PlanRequest& r) {
  const Problem& pb = r.problem;
  if (std::string why = unfit_inputs(pb, r.device); !why.empty()) return refuse(why);
  if (r.variant.normalize == ir::Normalize::Custom) {
    if (!r.overrides.custom_norm_kernels)
      return refuse("AE_CUSTOM_NORM=0 turns a custom row normalization's kernels off");
  }
  const Kind kind = pb.kind == OpKind::Forward ? Kind::Forward : Kind::Backward;
  // Per-batch key lengths and pages in the layout: the forwards walk them (the caller plans the
  // variant with its mask bound otherwise). Packed sequences: the backwards too (not
  // deterministic: a CTA past its sequence's keys leaves without its turns; not a custom
  // normalization: its row pass is dense).
  const bool varlen = pb.kv_layout == KvLayout::Varlen;
  if (varlen && kind == Kind::Backward && (pb.deterministic || r.variant.normalize == ir::Normalize::Custom))
    return refuse("packed sequences in the backward kernels: not deterministic, softmax or none only");
  if (!varlen && pb.kv_layout != KvLayout::Dense && kind != Kind::Forward)
    return refuse(pb.kv_layout == KvLayout::Paged ? "a paged KV cache in the kernels: forwards only"
                                                  : "per-batch key lengths as a layout: forwards only");
  if (pb.kv_layout == KvLayout::Paged &&
      (pb.page_size < 8 || pb.page_size % 8 || pb.page_size > std::numeric_limits<int32_t>::max()))
    return refuse(fmt::format("pages of {} rows: the kernels take multiples of 8 (32-bit)",
                              pb.page_size));
  if (pb.pool_block > 0) {  // the gate-training forward (nvidia/mma_rows.h store_block_max)
    if (kind != Kind::Forward || r.variant.normalize != ir::Normalize::Softmax)
      return refuse("the pooled attention map's kernels: softmax forwards only");
    if (r.device.vendor != jit::Vendor::kNvidia || pb.kv_layout != KvLayout::Dense)
      return refuse("the pooled attention map's kernels: NVIDIA GPUs, dense K and V");
    if (pb.pool_block % 8 || pb.pool_block > std::numeric_limits<int32_t>::max())
      return refuse(fmt::format("pooled blocks of {} keys: the kernels take multiples of 8",
                                pb.pool_block));
  }
  KernelSpec spec;
  std::string why;
  if (!main_spec(r, kind, &spec, &why)) return refuse(why);

  LaunchPlan plan;
  plan.ok = true;
  plan.family = spec.mla ? "sm90 (MLA decode)" : codegen::family_name(spec.family);
  plan.attn = shape_params(pb);
  // Nothing to compute: the caller fills the outputs (zeros; the LSE -inf where rows exist).
  if (pb.batch == 0 || pb.q_heads == 0 || pb.q_len == 0 || pb.kv_len == 0) return plan;

  // The sm90 backward reads each MMA warpgroup's 64 keys' codes (not the wide kernels', whose
  // warpgroups share their 64 keys) where the mask is a block tensor's lookup: there the mask
  // per score costs a load, and 64-key blocks make most 128-key tiles half kept. (Elsewhere
  // the registers for the halves' codes spilled the D128 causal kernel: 132 bytes; and past
  // 256 columns of dK + dV, computed in two score parts, the deterministic D192/128 one.)
  spec.key_halves = spec.family == Family::Sm90 && kind == Kind::Backward &&
                    spec.block_n == 2 * 64 && spec.d_qk + spec.d_v <= 256 &&
                    pb.sparsity == BlockSparsity::BlockTensor;
  add_block_states(r, spec, plan);
  AttnParams& a = plan.attn;
  if (pb.pool_block > 0) {
    a.pool_block = static_cast<int>(pb.pool_block);
    a.n_pool_blocks = static_cast<int>((pb.kv_len + pb.pool_block - 1) / pb.pool_block);
  }
  if (kind == Kind::Forward) {
    const long long kv_bytes = pb.kv_len * (pb.d_qk + pb.d_v) * 2 / std::max<int64_t>(1, pb.group());
    a.head_group = head_group(spec.family, r.variant.has_mask, kv_bytes, a.q_heads,
                              r.overrides.head_group);
    const std::optional<Step> combine = add_kv_splits(r, spec, plan);
    spec.kv_split = combine.has_value();
    Dim3 grid{u(a.n_q_blocks), u(pb.q_heads), u(pb.batch * a.kv_splits)};
    if (const int ctas = persistent_ctas(r, spec, a); ctas > 0) {
      spec.persistent = true;
      grid = {u(ctas), 1, 1};
      Workspace counter{WorkspaceId::TileCounter, {1}, ElemType::Int32, ""};
      counter.zeroed = true;
      plan.workspaces.push_back(counter);
    }
    if (wants_v_check(r, spec)) add_v_check(r, spec, plan);
    plan.steps.push_back(main_step(pb, spec, grid));
    if (combine) plan.steps.push_back(*combine);
    if (pb.pool_block > 0) {  // the gate-training forward's map: a warp per query block
      Step pool = common_step(r, Kind::PoolMap, spec.bf16, kPoolThreads);
      const int64_t warps = pb.batch * pb.q_heads * ((pb.q_len + pb.pool_block - 1) / pb.pool_block);
      const int64_t per_cta = kPoolThreads / r.device.warp_size;
      pool.grid = {u((warps + per_cta - 1) / per_cta), 1, 1};
      plan.steps.push_back(pool);
    }
    return plan;
  }

  // Backward: the prep row pass (delta and the log2 LSE under softmax, dq_accum zeroed, and
  // the deterministic mode's dQ tile counters), the main kernel (dK, dV; dQ added into dq_accum
  // in fp32, rows padded to whole query blocks so that it adds without row tests), the dQ row
  // pass (scale and cast).
  const bool custom = r.variant.normalize == ir::Normalize::Custom;
  const bool stats = r.variant.normalize == ir::Normalize::Softmax || custom;
  plan.workspaces.push_back(
      {WorkspaceId::DqAccum, {pb.batch, pb.q_heads, static_cast<int64_t>(a.n_q_blocks) * spec.block_m, spec.d_qk},
       ElemType::Float32, ""});
  if (stats) {
    plan.workspaces.push_back({WorkspaceId::Delta, {pb.batch, pb.q_heads, pb.q_len}, ElemType::Float32, ""});
    plan.workspaces.push_back({WorkspaceId::Lse2, {pb.batch, pb.q_heads, pb.q_len}, ElemType::Float32, ""});
  }
  if (pb.deterministic)
    plan.workspaces.push_back(
        {WorkspaceId::DqOrder, {pb.batch, pb.q_heads, static_cast<int64_t>(a.n_q_blocks)}, ElemType::Int32, ""});
  BwdRowParams& rp = plan.rows;
  rp.batch = a.batch;
  rp.heads = a.q_heads;
  rp.q_len = a.q_len;
  rp.acc_rows = a.n_q_blocks * spec.block_m;
  rp.acc_tiled = spec.family == Family::Sm90;  // whole tiles, bulk-reduced (sm90/bwd.h)
  rp.order_rows = static_cast<int>(spec.block_m);  // the prep pass zeroes a counter per block
  rp.d_qk = static_cast<int>(pb.d_qk);
  rp.d_v = static_cast<int>(pb.d_v);
  rp.acc_cols = spec.d_qk;  // the main kernel's (a padded head dim: sm90_padded)
  rp.scale = a.scale;
  plan.steps.push_back(row_pass(r, Kind::BwdPrep, rp.d_v));
  if (custom) plan.steps.push_back(custom_rows_pass(r, spec));
  plan.steps.push_back(main_step(pb, spec, {u(a.n_kv_blocks), u(pb.kv_heads), u(pb.batch)}));
  plan.steps.push_back(row_pass(r, Kind::BwdDq, rp.d_qk));
  return plan;
}

}  // namespace ae::plan
