// Template instantiation (codegen/instantiate.h) from a spec and its ABI (codegen/kernel_abi.h):
// the entry's parameters are the ABI's, in order; the variant-free row passes compile (NVRTC,
// no GPU needed) under their entry names without spills.
#include <gtest/gtest.h>

#include "codegen/instantiate.h"
#include "codegen/kernel_abi.h"
#include "ir/error.h"
#include "ir/variant.h"
#include "jit/compiler.h"
#include "jit/headers.h"
#include "trace_builder.h"

namespace ae::codegen {
namespace {

std::shared_ptr<const ir::Variant> causal_variant() {
  test::TraceBuilder t;
  t.param("score");
  int q = t.param("q_idx"), k = t.param("kv_idx");
  t.score(0);
  t.mask(t.op("ge", {q, k}));
  return ir::build_variant(t.str());
}

KernelSpec spec(Kind kind, Family family) {
  KernelSpec s;
  s.kind = kind;
  s.family = family;
  s.arch = "sm_90a";
  s.d_qk = s.d_v = 128;
  s.block_m = 128;
  s.block_n = 64;
  s.m_tiles = 2;
  s.warps = family == Family::Sm90 ? 12 : kind == Kind::BlockState ? 4 : kind == Kind::Forward ? 4 : 8;
  return s;
}

TEST(Instantiate, EntryParametersAreTheAbi) {
  const auto v = causal_variant();
  const std::string fwd = instantiate(v.get(), spec(Kind::Forward, Family::Sm80));
  EXPECT_NE(fwd.find("#include \"sm80/fwd.h\""), std::string::npos);
  EXPECT_NE(fwd.find("__launch_bounds__(128, 1) ae_fwd(const ae::AttnParams p, const "
                     "ae::VariantArgs va)"),
            std::string::npos)
      << fwd;
  EXPECT_NE(fwd.find("ae::DenseLayout, false>"), std::string::npos) << fwd;  // no split-KV
  EXPECT_NE(fwd.find("using Norm = ae::norm::Softmax;"), std::string::npos);
  const std::string f90 = instantiate(v.get(), spec(Kind::Forward, Family::Sm90));
  EXPECT_NE(f90.find("ae_fwd(const __grid_constant__ ae::AttnParams p, const __grid_constant__ "
                     "ae::VariantArgs va, const __grid_constant__ ae::TmaDesc tq, const "
                     "__grid_constant__ ae::TmaDesc tk, const __grid_constant__ ae::TmaDesc tv)"),
            std::string::npos)
      << f90;
  const std::string bs = instantiate(v.get(), spec(Kind::BlockState, Family::Common));
  EXPECT_NE(bs.find("__launch_bounds__(128) ae_block_state(const ae::AttnParams p, const "
                    "ae::VariantArgs va, const ae::BlockStateParams bs)"),
            std::string::npos)
      << bs;
  EXPECT_EQ(abi_of(spec(Kind::BlockState, Family::Common)).args,
            (std::vector<Arg>{Arg::Attn, Arg::Variant, Arg::BlockStates}));
  EXPECT_TRUE(abi_of(spec(Kind::Forward, Family::Sm90)).grid_constant);
  // Split-KV: the forward built for it, and the combine (no variant, AttnParams only).
  KernelSpec split = spec(Kind::Forward, Family::Sm90);
  split.kv_split = true;
  EXPECT_NE(instantiate(v.get(), split).find("ae::DenseLayout, true, false, false, false>"), std::string::npos);
  EXPECT_NE(split.describe().find(" split"), std::string::npos);
  // The persistent sm90 forward, and the softmax ahead of P V's wait: its config's last flags.
  KernelSpec pers = spec(Kind::Forward, Family::Sm90);
  EXPECT_NE(f90.find("ae::DenseLayout, false, false, false, false>"), std::string::npos) << f90;
  pers.persistent = true;
  EXPECT_NE(instantiate(v.get(), pers).find("ae::DenseLayout, false, true, false, false>"),
            std::string::npos);
  KernelSpec ahead = spec(Kind::Forward, Family::Sm90);
  ahead.softmax_ahead = true;
  EXPECT_NE(instantiate(v.get(), ahead).find("ae::DenseLayout, false, false, true, false>"),
            std::string::npos);
  // A padded head dim (csrc/plan/tile_tables.h sm90_padded): the last flag, forward and backward.
  KernelSpec padded = spec(Kind::Forward, Family::Sm90);
  padded.padded = true;
  EXPECT_NE(instantiate(v.get(), padded).find("ae::DenseLayout, false, false, false, true>"),
            std::string::npos);
  EXPECT_NE(padded.describe().find(" pad"), std::string::npos) << padded.describe();
  KernelSpec padded_bwd = spec(Kind::Backward, Family::Sm90);
  padded_bwd.padded = true;
  EXPECT_NE(instantiate(v.get(), padded_bwd).find("ae::DenseLayout, false, true>"),
            std::string::npos);
  EXPECT_NE(ahead.describe().find(" ov pp sa"), std::string::npos) << ahead.describe();
  EXPECT_NE(pers.describe().find(" pers"), std::string::npos);
  const std::string combine = instantiate(nullptr, spec(Kind::FwdCombine, Family::Common));
  EXPECT_NE(combine.find("ae_fwd_combine(const ae::AttnParams p)"), std::string::npos) << combine;
  EXPECT_NE(combine.find("ae::fwd_combine<true, ae::DenseLayout>(p)"), std::string::npos) << combine;
  EXPECT_EQ(combine.find("struct Variant"), std::string::npos);
  EXPECT_THROW(instantiate(nullptr, spec(Kind::Forward, Family::Sm80)), ir::GraphError);
  // The decode template: its own header and config, no one-CTA-per-SM launch bound.
  KernelSpec dec = spec(Kind::Forward, Family::Sm80);
  dec.decode = true;
  dec.block_m = 16, dec.block_n = 128, dec.m_tiles = 1;
  const std::string d = instantiate(v.get(), dec);
  EXPECT_NE(d.find("#include \"sm80/decode.h\""), std::string::npos) << d;
  EXPECT_NE(d.find("ae::sm80::DecodeConfig<128, 128, 128, 4, true, ae::DenseLayout, false>"),
            std::string::npos) << d;
  EXPECT_NE(d.find("__launch_bounds__(128) ae_fwd(const ae::AttnParams p, const ae::VariantArgs va)"),
            std::string::npos) << d;
  EXPECT_NE(d.find("ae::sm80::attention_decode<Cfg>(p, Variant{va})"), std::string::npos);
  EXPECT_EQ(dec.describe(), "fwd sm_90a bf16 d128/128 16x128 w4 dec");
}

// score + table[h, kv_idx] + slopes[h] * (kv_idx - q_idx), both captured tensors learnable.
std::shared_ptr<const ir::Variant> bias_and_slopes_variant() {
  test::TraceBuilder t;
  int table = t.buffer("table", "float32", {4, 64}, true);
  int slopes = t.buffer("slopes", "float32", {4}, true);
  int s = t.param("score"), h = t.param("h"), q = t.param("q_idx"), kv = t.param("kv_idx");
  int dist = t.cast("float", t.op("sub", {kv, q}));
  int biased = t.op("add", {s, t.load(table, {h, kv})});
  t.score(t.op("add", {biased, t.op("mul", {t.load(slopes, {h}), dist})}));
  return ir::build_variant(t.str());
}

// The backward's additions into captured tensors' gradients go through the Variant's sink
// (common/variant_support.h), never straight to global atomics: a register-summed run per
// call site, into a shared-memory copy or global memory as the spec says.
TEST(Instantiate, CapturedGradientsGoThroughTheSink) {
  const auto v = bias_and_slopes_variant();
  KernelSpec s = spec(Kind::Backward, Family::Sm80);
  s.block_m = 64;
  s.buffer_dtypes = {"float32", "float32"};
  s.buffer_grads = {true, true};
  const std::string global = instantiate(v.get(), s);
  EXPECT_NE(global.find("mutable ae::GradSink<ae::GlobalGrads, 0, 1> grads;"), std::string::npos)
      << global;
  EXPECT_NE(global.find("grads.add_run<0, 0>(va, ae::grad_offset<2>(va.buf[0], "),
            std::string::npos) << global;
  EXPECT_NE(global.find("grads.add_run<1, 1>(va, ae::grad_offset<1>(va.buf[1], "),
            std::string::npos) << global;
  EXPECT_EQ(global.find("atomicAdd"), std::string::npos) << global;
  s.grad_sink = GradSink::Shared;
  const std::string shared = instantiate(v.get(), s);
  EXPECT_NE(shared.find("mutable ae::GradSink<ae::SharedGrads<ae::GradTensor<0, 2>, "
                        "ae::GradTensor<1, 1>>, 0, 1> grads;"),
            std::string::npos) << shared;
  EXPECT_NE(s.describe().find(" dbuf0,1 smem"), std::string::npos) << s.describe();
  // Only the tensors that want a gradient get additions (and a shared copy).
  s.buffer_grads = {false, true};
  const std::string slopes_only = instantiate(v.get(), s);
  EXPECT_NE(slopes_only.find("ae::SharedGrads<ae::GradTensor<1, 1>>, 1> grads;"),
            std::string::npos) << slopes_only;
  EXPECT_NE(slopes_only.find("grads.add_run<0, 1>(va, "), std::string::npos) << slopes_only;
  EXPECT_EQ(slopes_only.find("grad_offset<2>"), std::string::npos) << slopes_only;  // the table
  // A forward has no additions: its sink is the stateless global one.
  s.kind = Kind::Forward;
  s.buffer_grads = {};
  EXPECT_NE(instantiate(v.get(), s).find("mutable ae::GradSink<ae::GlobalGrads> grads;"),
            std::string::npos);
}

TEST(Instantiate, RowPassesNeedNoVariant) {
  KernelSpec prep = spec(Kind::BwdPrep, Family::Common);
  prep.warps = 8;
  prep.bf16 = true;
  const std::string src = instantiate(nullptr, prep);
  EXPECT_NE(src.find("#include \"common/bwd_rows.h\""), std::string::npos);
  EXPECT_NE(src.find("ae::bwd_prep<true>(rp)"), std::string::npos);
  EXPECT_EQ(src.find("struct Variant"), std::string::npos);
  EXPECT_EQ(prep.entry(), "ae_bwd_prep");
  KernelSpec dq = prep;
  dq.kind = Kind::BwdDq;
  dq.bf16 = false;
  EXPECT_NE(instantiate(nullptr, dq).find("ae::bwd_dq<false>(rp)"), std::string::npos);
  EXPECT_NE(prep.describe(), dq.describe());  // distinct registry keys
  EXPECT_FALSE(prep.uses_variant());
}

TEST(Instantiate, RowPassesCompileWithoutSpills) {
  for (Kind kind : {Kind::BwdPrep, Kind::BwdDq}) {
    for (bool bf16 : {true, false}) {
      KernelSpec s = spec(kind, Family::Common);
      s.warps = 8;
      s.bf16 = bf16;
      jit::CompileRequest req;
      req.source = instantiate(nullptr, s);
      req.kernel = s.entry();
      req.arch = "sm_80";
      const jit::CompileResult r =
          jit::compiler_for_arch(req.arch).compile(req, *jit::template_headers());
      EXPECT_EQ(r.lowered_name, s.entry()) << s.describe();
      EXPECT_GT(r.figures.registers, 0) << s.describe();
      EXPECT_EQ(r.figures.spill_stores, 0) << s.describe();
    }
  }
}

}  // namespace
}  // namespace ae::codegen
