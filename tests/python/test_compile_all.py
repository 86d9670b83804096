"""CI's compile-all check (no GPU needed): every kernel instantiation the tests and the demo
use is planned (the H100 device class), generated and compiled with NVRTC for sm_80 and
sm_90a, and must not spill; the portable kernels of templates/common also compile for gfx90a
with hipRTC (the gfx90a family's own: test_compile_gfx90a.py). Skipped where no NVRTC can be
loaded."""
import re

import pytest
import torch

import attention_engine as ae
from attention_engine import _C, mods
from conftest import rtc_available


def _nvrtc_available() -> bool:
    return rtc_available("sm_80")


pytestmark = pytest.mark.skipif(not _nvrtc_available(), reason="NVRTC not available")

VARIANTS = {
    "plain": lambda: ae.compile(),
    "causal": lambda: ae.compile(mask_mod=mods.causal),
    "sliding_window": lambda: ae.compile(mask_mod=mods.sliding_window(256)),
    "alibi": lambda: ae.compile(mods.alibi(mods.alibi_slopes(16)), mods.causal),
    "softcap": lambda: ae.compile(mods.softcap(30.0)),
    "relative_bias": lambda: ae.compile(
        mods.relative_bias(torch.zeros(16, 65, requires_grad=True), 32)),
    "document": lambda: ae.compile(mask_mod=mods.document_mask(torch.zeros(64, dtype=torch.long))),
    "sigmoid_none": lambda: ae.compile(mods.sigmoid(-4.0), normalize="none"),
}
DIMS = [(64, 64), (96, 96), (128, 128), (256, 256), (192, 128)]


SM90_DIMS = [(64, 64), (128, 128), (256, 256), (192, 128)]  # the sm90 forward's tile table


MASKED = {"causal", "sliding_window", "alibi", "document"}
# The sm90 backward: the variants whose code differs most, at 64 and 128, at 192 / 128 (two
# score parts, dQ in 64-column chunks; not with a captured tensor's gradient, which the planner
# gives the sm80 backward there), at unequal head dims, and wide (past 320 columns).
BWD90 = {"plain", "causal", "relative_bias", "document", "sigmoid_none", "softcap"}
BWD90_WIDE = [("plain", (192, 128)), ("causal", (192, 128)), ("document", (192, 128)),
              ("sigmoid_none", (192, 128)), ("softcap", (192, 128)), ("alibi", (192, 128)),
              ("causal", (128, 64)), ("sliding_window", (64, 128)), ("plain", (192, 64)),
              # wide: the warpgroups share 64 keys and split dK's and dV's columns
              ("causal", (256, 256)), ("document", (256, 128)), ("sigmoid_none", (128, 256)),
              # padded: the D128 kernels storing 96 or 80 columns, the wide ones 224 or 96
              ("causal", (96, 96)), ("relative_bias", (80, 80)), ("causal", (224, 224)),
              ("plain", (96, 256)), ("plain", (256, 64))]  # 256 / 64 as 256 / 128


def _instantiations():
    # kind: fwd (sm80 family), fwd90 (the sm90 forward), bwd (sm80), bwd90, block_state
    for name in VARIANTS:
        for dims in DIMS if name == "plain" else [(128, 128), (64, 64)]:
            for kind in ("fwd", "bwd"):
                yield name, kind, dims
        for dims in SM90_DIMS if name == "plain" else [(128, 128), (64, 64)]:
            yield name, "fwd90", dims
        if name in BWD90:
            for dims in [(128, 128), (64, 64)] if name in ("plain", "relative_bias") else [(128, 128)]:
                yield name, "bwd90", dims
        if name in MASKED:
            yield name, "block_state", (128, 128)
    for name, dims in BWD90_WIDE:
        yield name, "bwd90", dims
    yield "causal", "fwd90", (96, 96)  # padded: stores 96 of 128 columns
    yield "causal", "fwd90", (192, 192)  # padded: Dv 192 on the 192 / 256 forward
    yield "plain", "fwd", (128, 128), False  # fp16
    yield "plain", "fwd90", (128, 128), False
    # The deterministic backward (common/dq_order.h): with and without a block table, both
    # of the sm90 backward's dQ splits.
    for name, kind, dims in [("plain", "bwd90", (64, 64)), ("causal", "bwd90", (128, 128)),
                             ("document", "bwd", (128, 128)), ("plain", "bwd", (64, 64)),
                             ("document", "bwd90", (192, 128)), ("plain", "bwd90", (192, 64)),
                             ("causal", "bwd90", (256, 256))]:
        yield name, kind, dims, True, True


def _source(attn, kind, d_qk, d_v, bf16=True, grads=(), deterministic=False):
    dtypes = [str(t.dtype).replace("torch.", "") for t in attn.buffers]
    step, family = {"fwd": ("fwd", "sm80"), "fwd90": ("fwd", "sm90"), "bwd": ("bwd", "sm80"),
                    "bwd90": ("bwd", "sm90")}.get(kind, (kind, ""))
    return attn.variant.kernel_source(step, d_qk, d_v, bf16, dtypes, family=family,
                                      buffer_grads=list(grads), deterministic=deterministic)


@pytest.mark.parametrize("case", list(_instantiations()), ids=lambda c: "-".join(map(str, c)))
def test_instantiation_compiles_without_spills(case):
    name, kind, (d_qk, d_v), *rest = case
    bf16 = rest[0] if rest else True
    deterministic = rest[1] if len(rest) > 1 else False
    attn = VARIANTS[name]()
    grads = [t.requires_grad for t in attn.buffers] if kind.startswith("bwd") else []  # as run
    info = _source(attn, kind, d_qk, d_v, bf16, grads, deterministic)
    assert (" det" in info["describe"]) == deterministic
    _compiles_without_spills(info, kind)


# The split-KV forward (decode: the keys cut into ranges, partial outputs merged by the combine
# step, common/split_combine.h) of both families, planned with AE_KV_SPLITS.
SPLIT_CASES = [("plain", "fwd90", (128, 128)), ("plain", "fwd90", (64, 64)), ("causal", "fwd90", (128, 128)),
               ("document", "fwd90", (128, 128)), ("sigmoid_none", "fwd90", (128, 128)),
               ("plain", "fwd90", (256, 256)), ("plain", "fwd", (128, 128)), ("alibi", "fwd", (128, 128)),
               ("plain", "fwd", (96, 96))]


@pytest.mark.parametrize("case", SPLIT_CASES, ids=lambda c: "-".join(map(str, c)))
def test_split_kv_forward_compiles_without_spills(case, monkeypatch):
    monkeypatch.setenv("AE_KV_SPLITS", "4")
    name, kind, (d_qk, d_v) = case
    info = _source(VARIANTS[name](), kind, d_qk, d_v)
    assert info["describe"].endswith(" split"), info["describe"]
    assert "fwd_combine" in info["plan"], info["plan"]
    _compiles_without_spills(info, kind)


# The gate-training forward (seer.attention_with_pooling: each row's block maxima written from
# the forward's softmax step, nvidia/mma_rows.h store_block_max), as attention_pooled plans it:
# blocks of 64 keys (SeerAttention's default) in both families at the table's tiles, blocks of
# several tiles (a max into memory), the variants whose registers are tightest.
POOL_CASES = [("plain", "fwd90", (128, 128), 64), ("causal", "fwd90", (128, 128), 64),
              ("alibi", "fwd90", (128, 128), 64), ("softcap", "fwd90", (128, 128), 64),
              ("document", "fwd90", (128, 128), 64), ("causal", "fwd90", (64, 64), 64),
              ("causal", "fwd90", (256, 256), 64), ("causal", "fwd90", (128, 128), 256),
              ("relative_bias", "fwd90", (128, 128), 128), ("causal", "fwd", (128, 128), 64),
              ("alibi", "fwd", (64, 64), 32), ("plain", "fwd", (128, 128), 128)]


@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "-".join(map(str, c)))
def test_gate_training_forward_compiles_without_spills(case, monkeypatch):
    monkeypatch.setenv("AE_KV_SPLITS", "4")  # (the pooled forward never splits)
    name, kind, (d_qk, d_v), pool = case
    attn = VARIANTS[name]()
    dtypes = [str(t.dtype).replace("torch.", "") for t in attn.buffers]
    info = attn.variant.kernel_source("fwd", d_qk, d_v, True, dtypes, q_len=1,
                                      family="sm90" if kind == "fwd90" else "sm80",
                                      pool_block=pool)
    assert f" pool{pool}" in info["describe"] and " split" not in info["describe"], info["describe"]
    assert f"#define AE_POOL_BLOCK {pool}" in info["source"]
    _compiles_without_spills(info, kind)


def test_pooled_map_step_compiles():
    info = VARIANTS["causal"]().variant.kernel_source("pool_map", 128, 128, pool_block=64)
    assert info["describe"] == "pool_map sm_90a" and "ae::pool_map(p)" in info["source"]
    _compiles_without_spills(info, "pool_map")


# Linear attention (plan/linear_plan.h): the chunked forward's two passes and the backward's at
# every head-dim pair they take, both dtypes, and the decode step (portable: also for gfx90a).
@pytest.mark.parametrize("dims", [(64, 64), (128, 128), (64, 128), (128, 64)], ids=str)
@pytest.mark.parametrize("bf16", [True], ids=["bf16"])
def test_linear_forward_compiles_without_spills(dims, bf16):
    steps = _C.linear_kernel_sources(False, *dims, bf16=bf16)
    assert [st["step"] for st in steps] == ["linear_state", "linear_out"]
    back = _C.linear_kernel_sources(False, *dims, bf16=bf16, backward=True)
    assert [st["step"] for st in back] == ["linear_state", "linear_dstate", "linear_grads"]
    gla = _C.linear_kernel_sources(False, *dims, bf16=bf16, per_channel=True)
    assert all(" pc" in st["describe"] for st in gla)
    gla_back = _C.linear_kernel_sources(False, *dims, bf16=bf16, per_channel=True, backward=True)
    assert [st["describe"].split()[0] for st in gla_back] == ["linear_state", "linear_dstate",
                                                              "linear_grads"]
    assert all(" pc" in st["describe"] for st in gla_back)
    # the state passes at the value columns the planner does not pick (AE_LINEAR_STATE_COLS):
    # 64 for scalar decays, 32 per key channel
    half = [st for pc, cols in ((False, 64), (True, 32)) for st in
            _C.linear_kernel_sources(False, *dims, bf16=bf16, per_channel=pc, backward=True,
                                     state_cols=cols)[:2]]
    assert all(f" cols{64 if i < 2 else 32}" in st["describe"] for i, st in enumerate(half))
    for st in steps + back[1:] + gla + gla_back[1:] + half:
        _compiles_without_spills(st, "fwd")


@pytest.mark.parametrize("per_channel", [False, True], ids=["scalar", "per_channel"])
def test_linear_step_compiles(per_channel):
    (st,) = _C.linear_kernel_sources(True, 128, 128, per_channel=per_channel)
    _compiles_without_spills(st, "fwd")
    (amd,) = _C.linear_kernel_sources(True, 128, 128, device="mi250", per_channel=per_channel)
    (report,) = _C.jit_check_arches(amd["source"], amd["entry"], arches=["gfx90a"], options=[])
    assert report["ok"], report["error"]


def test_linear_plans_say_what_they_refuse():
    with pytest.raises(ValueError, match="64 or 128"):
        _C.linear_kernel_sources(False, 96, 64)
    with pytest.raises(ValueError, match="gradients' pass needs"):  # (an Ada GPU's 99 KB)
        _C.linear_kernel_sources(False, 128, 128, device="ada", per_channel=True, backward=True)
    with pytest.raises(ValueError, match="mma.sync"):
        _C.linear_kernel_sources(False, 64, 64, device="mi250")
    with pytest.raises(ValueError, match="up to 256"):
        _C.linear_kernel_sources(True, 512, 64)
    with pytest.raises(ValueError, match="fp16 inputs"):  # (the chunks' states would overflow)
        _C.linear_kernel_sources(False, 64, 64, bf16=False)
    (fp16_step,) = _C.linear_kernel_sources(True, 64, 64, bf16=False)
    _compiles_without_spills(fp16_step, "fwd")
    (st, out) = _C.linear_kernel_sources(False, 128, 64, batch=2, heads=3, t_len=130)
    # (the state's 64 x 32 tiles for scalar decays: 2 x 2 of a 128 x 64 state)
    assert st["grid"] == [4, 3, 2] and out["grid"] == [3, 3, 2] and out["n_chunks"] == 3


def test_gate_training_forward_is_planned_where_kernels_take_it(monkeypatch):
    """Softmax only, NVIDIA only, blocks of a multiple of 8 keys: elsewhere the planner says
    why (and the op runs the reference executor)."""
    causal = VARIANTS["causal"]()
    with pytest.raises(ValueError, match="multiples of 8"):
        causal.variant.kernel_source("fwd", 128, 128, pool_block=20)
    with pytest.raises(ValueError, match="softmax forwards only"):
        VARIANTS["sigmoid_none"]().variant.kernel_source("fwd", 128, 128, pool_block=64)
    with pytest.raises(ValueError, match="NVIDIA GPUs"):
        causal.variant.kernel_source("fwd", 128, 128, device="mi250", pool_block=64)
    # at 16 queries the decode template (its warps split the keys) is not taken
    monkeypatch.setenv("AE_DECODE", "1")
    assert " dec" in causal.variant.kernel_source("fwd", 128, 128, q_len=16)["describe"]
    info = causal.variant.kernel_source("fwd", 128, 128, q_len=16, pool_block=64)
    assert " dec" not in info["describe"] and " pool64" in info["describe"]


# The persistent sm90 forward (AE_PERSISTENT=on; common/tile_scheduler.h PersistentTiles): with and
# without the block list, every head-dim family, with and without the overlap (D256). (ptxas serialized its wgmmas, C7520, until V was
# waited for before the wgmma fence; _compiles_without_spills checks the log for that.)
PERSISTENT_CASES = [("plain", (128, 128)), ("causal", (128, 128)), ("document", (128, 128)),
                    ("alibi", (128, 128)), ("sigmoid_none", (128, 128)), ("causal", (64, 64)),
                    ("plain", (256, 256)), ("causal", (256, 256)), ("sliding_window", (256, 256))]


@pytest.mark.parametrize("case", PERSISTENT_CASES, ids=lambda c: f"{c[0]}-{c[1][0]}-{c[1][1]}")
def test_persistent_forward_compiles_without_spills(case, monkeypatch):
    monkeypatch.setenv("AE_PERSISTENT", "on")
    name, (d_qk, d_v) = case
    info = _source(VARIANTS[name](), "fwd90", d_qk, d_v)
    assert info["describe"].endswith(" pers"), info["describe"]
    _compiles_without_spills(info, "fwd90")


# The decode template (sm80/decode.h, AE_DECODE): forwards of 16 query rows or fewer, every variant kind,
# head dims up to 256, alone and as a split-KV range.
DECODE_CASES = [("plain", (128, 128)), ("plain", (64, 64)), ("plain", (256, 256)), ("plain", (192, 128)),
                ("plain", (96, 96)), ("causal", (128, 128)), ("alibi", (128, 128)),
                ("softcap", (128, 128)), ("relative_bias", (128, 128)), ("document", (128, 128)),
                ("sigmoid_none", (128, 128)), ("sliding_window", (64, 64))]


@pytest.mark.parametrize("split", [False, True], ids=["whole", "split"])
@pytest.mark.parametrize("case", DECODE_CASES, ids=lambda c: f"{c[0]}-{c[1][0]}-{c[1][1]}")
def test_decode_template_compiles_without_spills(case, split, monkeypatch):
    monkeypatch.setenv("AE_DECODE", "1")  # opt-in until it has run on a GPU
    monkeypatch.setenv("AE_KV_SPLITS", "4" if split else "1")
    name, (d_qk, d_v) = case
    attn = VARIANTS[name]()
    dtypes = [str(t.dtype).replace("torch.", "") for t in attn.buffers]
    info = attn.variant.kernel_source("fwd", d_qk, d_v, True, dtypes, q_len=1)
    assert info["describe"].endswith(" dec"), info["describe"]
    assert (" split" in info["describe"]) == split, info["describe"]
    assert '#include "sm80/decode.h"' in info["source"]
    _compiles_without_spills(info, "fwd")


@pytest.mark.parametrize("bf16", [True, False], ids=["bf16", "fp16"])
def test_split_kv_combine_compiles(bf16, monkeypatch):
    monkeypatch.setenv("AE_KV_SPLITS", "4")
    info = ae.compile().variant.kernel_source("fwd_combine", 128, 128, bf16)
    assert info["family"] == "common" and "struct Variant" not in info["source"]
    arches = ["sm_80", "sm_90a"] + (["gfx90a"] if rtc_available("gfx90a") else [])
    for arch in arches:
        (report,) = _C.jit_check_arches(info["source"], info["entry"], arches=[arch], options=[])
        assert report["ok"], f"{info['describe']} {arch}: {report['error']}"
        if arch.startswith("sm_"):
            assert 0 < report["registers"] <= 64  # a memory-bound pass: full occupancy
            assert report["spill_stores"] == 0 and report["spill_loads"] == 0


@pytest.mark.parametrize("bf16", [True, False], ids=["bf16", "fp16"])
def test_v_check_pass_compiles(bf16, monkeypatch):
    # The masked forward's V-check pass (common/v_check.h), for every family's arch
    monkeypatch.setenv("AE_V_CHECK", "1")
    info = ae.compile(mask_mod=mods.causal).variant.kernel_source("v_check", 128, 128, bf16)
    assert info["family"] == "common" and "struct Variant" not in info["source"]
    assert "v_check" in info["plan"] and info["plan"].index("v_check") < info["plan"].index("fwd90")
    arches = ["sm_80", "sm_90a"] + (["gfx90a"] if rtc_available("gfx90a") else [])
    for arch in arches:
        (report,) = _C.jit_check_arches(info["source"], info["entry"], arches=[arch], options=[])
        assert report["ok"], f"{info['describe']} {arch}: {report['error']}"
        if arch.startswith("sm_"):
            assert 0 < report["registers"] <= 64
            assert report["spill_stores"] == 0 and report["spill_loads"] == 0


# Gradients of captured tensors (common/variant_support.h): a shared-memory copy where the
# planner finds room (relative_bias's 16 x 65 table is one in the cases above), global
# atomics where it does not (a 16 x 1025 table on the sm90 backward) or where AE_GRAD_SINK
# says so; learnable ALiBi slopes in both.
GRAD_SINK_VARIANTS = {
    "relative_bias_large": lambda: ae.compile(
        mods.relative_bias(torch.zeros(16, 1025, requires_grad=True), 512), mods.causal),
    "alibi_learned": lambda: ae.compile(
        mods.alibi(torch.zeros(16, requires_grad=True)), mods.causal),
    "relative_bias": VARIANTS["relative_bias"],
}
GRAD_SINK_CASES = [
    ("relative_bias", "bwd", "global"),
    ("relative_bias", "bwd90", "global"),
    ("relative_bias_large", "bwd90", "global"),     # too large: the planner's fallback
    ("relative_bias_large", "bwd", "shared"),       # sm80: its one-stage tile leaves room
    ("alibi_learned", "bwd", "shared"),
    ("alibi_learned", "bwd90", "shared"),
    ("alibi_learned", "bwd90", "global"),
]


@pytest.mark.parametrize("case", GRAD_SINK_CASES, ids=lambda c: "-".join(c))
def test_captured_gradient_sinks_compile_without_spills(case, monkeypatch):
    name, kind, sink = case
    if sink == "global" and name != "relative_bias_large":
        monkeypatch.setenv("AE_GRAD_SINK", "global")
    attn = GRAD_SINK_VARIANTS[name]()
    info = _source(attn, kind, 128, 128, True, [True])
    assert (" dbuf0 smem" in info["describe"]) == (sink == "shared"), info["describe"]
    src = info["source"].split("struct Variant")[1]
    assert ("ae::SharedGrads<ae::GradTensor<0, " in src) == (sink == "shared")
    assert "grads.add_run<0, 0>(va, " in src  # register sums while the offset stays the same
    _compiles_without_spills(info, kind)


WARNING = re.compile(r"\bwarning\b", re.IGNORECASE)
IN_TEMPLATE = re.compile(r"^\s*(common|nvidia|sm80|sm90|gfx90a)/[\w.]+\(\d+\)")


def warning_lines(log, templates=False):
    """The warning lines of a compile log: in generated code and ptxas's (templates=False), or
    in the template headers (templates=True). A warning in generated code (a narrowed
    constant, a statement swallowed by a comment, a missing return) is a kernel that may
    compute something else (issue 15, defect 2)."""
    lines = [line for line in log.splitlines()
             if WARNING.search(line) and not line.startswith("Remark")]
    return [line for line in lines if bool(IN_TEMPLATE.match(line)) == templates]


def _compiles_without_spills(info, kind, arches=None):
    """Compiles as the runtime does and fails on a spill, a serialized wgmma, or a warning in
    the generated code (at the table's options: the fallbacks differ only in registers)."""
    if arches is None:  # wgmma, TMA: sm_90a only
        arches = ["sm_90a"] if kind.endswith("90") else ["sm_80", "sm_90a"]
    for arch in arches:
        # The runtime (get_kernel) compiles at the table's options and, on a spill, at the
        # fallback register-usage levels in order: the one it keeps must not spill.
        tried = []
        for options in [info["options"], *info["fallback_options"]]:
            (report,) = _C.jit_check_arches(info["source"], info["entry"], arches=[arch],
                                            options=options)
            assert report["ok"], f"{info['describe']} {arch}: {report['error']}"
            assert 0 < report["registers"] <= 255
            if not tried:
                assert warning_lines(report["log"]) == [], f"{info['describe']} {arch}"
            # ptxas serializes every wgmma of a kernel where one sits in a branch it cannot
            # prove uniform, or where a branch writes their registers (C7518 / C7520)
            assert "Potential Performance Loss" not in report["log"], \
                f"{info['describe']} {arch}: {report['log']}"
            tried.append((options, report["spill_stores"], report["spill_loads"]))
            if report["spill_stores"] == 0 and report["spill_loads"] == 0:
                break
        else:
            pytest.fail(f"{info['describe']} {arch} spills at every register-usage level: {tried}")


# A mask with two column terms (per-batch documents and dropped keys, codegen/mask_split.h):
# the sm90 forward spilled loading both per column, and takes them per score instead.
@pytest.mark.parametrize("kind", ["fwd90", "bwd90"])
def test_mask_with_two_column_terms_compiles_without_spills(kind):
    doc, kept = torch.zeros(2, 64, dtype=torch.int32), torch.ones(64, dtype=torch.bool)
    attn = ae.compile(mask_mod=lambda b, h, q_idx, kv_idx:
                      (doc[b, q_idx] == doc[b, kv_idx]) & kept[kv_idx] & (q_idx >= kv_idx))
    info = _source(attn, kind, 128, 128, grads=[False, False] if kind == "bwd90" else ())
    assert "kMaskRowTerms = 1, kMaskColTerms = 2" in info["source"]
    _compiles_without_spills(info, kind)


# The variants the Python layers build (not written by a user): the inference entry points'
# positions rewrite (attention_engine/positions.py: two int64 tensors indexed by b), with GQA
# packing for decode (gqa_pack.py: h and q_idx from the packed row), and SeerAttention's
# block-sparse attention (a bool block tensor).
def _positions_variant(attn, pack=None):
    from attention_engine.inference import _positioned
    return _positioned(attn, pack).variant, [str(t.dtype).replace("torch.", "") for t in attn.buffers] + ["int64", "int64"]


BUILT_VARIANTS = {
    "positions_causal": lambda: _positions_variant(ae.compile(mask_mod=mods.causal)),
    "positions_alibi": lambda: _positions_variant(ae.compile(mods.alibi(mods.alibi_slopes(16)), mods.causal)),
    "positions_alibi_gqa4_sq1": lambda: _positions_variant(
        ae.compile(mods.alibi(mods.alibi_slopes(16)), mods.causal), (4, 1)),
    "seer_block_sparse": lambda: (ae.seer.BlockSparseAttention(mods.softcap(20.0), mods.causal)._attn.variant,
                                  ["bool"]),
}


@pytest.mark.parametrize("kind", ["fwd", "bwd", "fwd90", "bwd90", "block_state"])
@pytest.mark.parametrize("name", list(BUILT_VARIANTS))
def test_built_variants_compile_without_spills(name, kind):
    variant, dtypes = BUILT_VARIANTS[name]()
    step, family = {"fwd": ("fwd", "sm80"), "fwd90": ("fwd", "sm90"), "bwd": ("bwd", "sm80"),
                    "bwd90": ("bwd", "sm90")}.get(kind, (kind, ""))
    grads = [False] * len(dtypes) if step == "bwd" else []
    info = variant.kernel_source(step, 128, 128, True, dtypes, family=family, buffer_grads=grads)
    _compiles_without_spills(info, kind)


def _flex_codes_variant():
    """A FlexAttention block mask's lookup (int8 codes, _block_mask.block_mask_to_mask_mod)."""
    from attention_engine._block_mask import block_mask_to_mask_mod
    bm = ae.create_block_mask(mods.causal, 1, 2, 512, 512, device="cpu", BLOCK_SIZE=64)
    bm = torch.nn.attention.flex_attention.BlockMask.from_kv_blocks(
        bm.kv_num_blocks, bm.kv_indices, bm.full_kv_num_blocks, bm.full_kv_indices,
        BLOCK_SIZE=64, mask_mod=mods.causal)
    attn = ae.compile(mask_mod=block_mask_to_mask_mod(bm, "cpu"))
    return attn.variant, [str(t.dtype).replace("torch.", "") for t in attn.buffers]


# A mask looking up a block tensor (csrc/ir/block_mask.h): the table from the tensor's codes
# (common/block_state.h block_state_from_blocks), for NVIDIA and gfx90a (a portable kernel).
@pytest.mark.parametrize("name", ["seer_block_sparse", "flex_codes"])
def test_block_tensor_table_compiles(name):
    variant, dtypes = BUILT_VARIANTS[name]() if name in BUILT_VARIANTS else _flex_codes_variant()
    info = variant.kernel_source("block_state_blocks", 128, 128, True, dtypes)
    assert info["describe"].startswith("block_state_blocks sm_90a " + dtypes[-1 if name == "seer_block_sparse" else 0])
    _compiles_without_spills(info, "block_state")
    if rtc_available("gfx90a"):
        info = variant.kernel_source("block_state_blocks", 128, 128, True, dtypes, device="mi250")
        (report,) = _C.jit_check_arches(info["source"], info["entry"], arches=["gfx90a"], options=[])
        assert report["ok"], f"{info['describe']} gfx90a: {report['error']}"


@pytest.mark.parametrize("bf16", [True, False], ids=["bf16", "fp16"])
@pytest.mark.parametrize("row_pass", ["bwd_prep", "bwd_dq"])
def test_backward_row_passes_compile_without_spills(row_pass, bf16):
    info = ae.compile().variant.kernel_source(row_pass, 128, 128, bf16)
    assert info["entry"] == "ae_" + row_pass and info["entry"] in info["source"]
    assert info["family"] == "common" and "struct Variant" not in info["source"]
    for arch in ("sm_80", "sm_90a"):
        (report,) = _C.jit_check_arches(info["source"], info["entry"], arches=[arch], options=[])
        assert report["ok"], f"{info['describe']} {arch}: {report['error']}"
        assert 0 < report["registers"] <= 64  # a memory-bound pass: full occupancy
        assert report["spill_stores"] == 0 and report["spill_loads"] == 0


def test_kernel_source_checks_its_arguments():
    v = ae.compile().variant
    with pytest.raises(ae.GraphError, match="step must be"):
        v.kernel_source("convert", 128, 128)
    with pytest.raises(ae.GraphError, match="device must be"):
        v.kernel_source("fwd", 128, 128, device="v100")
    with pytest.raises(ae.GraphError, match="family must be"):
        v.kernel_source("fwd", 128, 128, family="sm70")
    with pytest.raises(ae.GraphError, match="no block_state step"):
        v.kernel_source("block_state", 128, 128)  # no mask, no table
    with pytest.raises(ae.GraphError, match=r"head dims \(136, 136\) have no gfx90a backward"):
        v.kernel_source("bwd", 136, 136, device="mi250")  # the family: test_compile_gfx90a.py


def test_kernel_source_shows_the_plan():
    causal = VARIANTS["causal"]()
    info = causal.variant.kernel_source("bwd", 128, 128)
    steps = [line.split()[0] for line in info["plan"].splitlines() if not line.startswith("workspace")]
    assert steps == ["block_state", "bwd_prep", "bwd90", "bwd_dq"], info["plan"]  # H100: sm90
    sm80 = causal.variant.kernel_source("bwd", 128, 128, family="sm80")
    assert sm80["family"] == "sm80" and sm80["describe"].startswith("bwd sm_90a")
    # A100: the sm80 forward, smaller tiles at D256
    a100 = causal.variant.kernel_source("fwd", 256, 256, device="a100")
    assert a100["family"] == "sm80" and "64x32 w4" in a100["describe"]


# The kernels of templates/common are portable: hipRTC compiles them for gfx90a (no GPU
# needed), so a HIP family reuses them as they are.
@pytest.mark.skipif(not rtc_available("gfx90a"), reason="hipRTC not available")
@pytest.mark.parametrize("step", ["block_state", "bwd_prep", "bwd_dq"])
def test_common_kernels_compile_for_gfx90a(step):
    attn = VARIANTS["document"]() if step == "block_state" else ae.compile()
    dtypes = [str(t.dtype).replace("torch.", "") for t in attn.buffers]
    info = attn.variant.kernel_source(step, 128, 128, True, dtypes)
    (report,) = _C.jit_check_arches(info["source"], info["entry"], arches=["gfx90a"], options=[])
    assert report["ok"], f"{info['describe']} gfx90a: {report['error']}"


def test_generated_source_is_readable():
    attn = VARIANTS["alibi"]()
    src = _source(attn, "fwd", 128, 128)["source"]
    assert "struct Variant" in src and 'extern "C" __global__' in src
    # one statement per graph node, named after it, with the user's line
    assert "const float n" in src and "mods.py" in src


def test_backward_adds_gradients_only_into_tensors_that_want_them():
    # Gradient atomics are stores the compiler must order the variant's loads around, so a
    # backward for captured tensors without gradients has none (and is a kernel of its own).
    rel = VARIANTS["relative_bias"]()
    without = _source(rel, "bwd", 128, 128)
    with_grad = _source(rel, "bwd", 128, 128, grads=[True])
    assert "grads.add" not in without["source"] and "grads.add_run<0, 0>(va, " in with_grad["source"]
    assert "atomicAdd" not in with_grad["source"].split("struct Variant")[1]  # only the sink's
    assert " dbuf0" in with_grad["describe"] and "dbuf" not in without["describe"]
    with pytest.raises(ae.GraphError, match="gradient flags"):
        _source(rel, "bwd", 128, 128, grads=[True, False])


def test_sm90_tile_table_refuses_unsupported_head_dims():
    with pytest.raises(ae.GraphError, match="no sm90 kernel"):
        ae.compile().variant.kernel_source("fwd", 48, 48, family="sm90")
    # the planner's own choice falls back to the sm80 forward
    assert ae.compile().variant.kernel_source("fwd", 48, 48)["family"] == "sm80"


def test_sm90_pads_head_dims_to_the_next_multiple_of_64():
    """D96 runs the D128 kernels built to store only the tensors' columns (KernelSpec::padded,
    AttnParams d_qk / d_v), forward and backward; D128's own kernels test no columns."""
    attn = ae.compile(mask_mod=mods.causal)
    for step in ("fwd", "bwd"):
        d96 = attn.variant.kernel_source(step, 96, 96)
        d128 = attn.variant.kernel_source(step, 128, 128)
        assert d96["family"] == "sm90", d96["describe"]
        assert "d128/128" in d96["describe"] and d96["describe"].endswith(" pad")
        assert d128["describe"] == d96["describe"][:-len(" pad")]
        config = [line for line in d96["source"].splitlines() if "Config<" in line]
        assert config and config[0].endswith("true>;"), config  # PADDED_, the last parameter


def test_sm90_kernel_is_warp_specialized_wgmma():
    src = ae.compile().variant.kernel_source("fwd", 128, 128)  # H100: the planner's choice
    assert src["family"] == "sm90"
    assert "sm90/fwd.h" in src["source"] and "__grid_constant__ ae::TmaDesc" in src["source"]
    assert src["threads"] == 384 and src["smem"] > 128 * 1024


def test_generated_wgmma_header_is_up_to_date():
    """templates/sm90/wgmma.h is tools/gen_wgmma.py's output: regenerate it after editing."""
    import pathlib
    import subprocess
    import sys
    root = pathlib.Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, str(root / "tools" / "gen_wgmma.py")], check=True,
                         capture_output=True, text=True).stdout
    assert out == (root / "templates" / "sm90" / "wgmma.h").read_text()


def test_sm80_backward_tile_table():
    # 128 keys per CTA where dK and dV fit in registers, 64 past head dim 128; Q and dO
    # double-buffered within an H100's 227 KB of shared memory
    d128 = _source(ae.compile(), "bwd", 128, 128)
    d256 = _source(ae.compile(), "bwd", 256, 256)
    assert "64x128 w8 s2 r0" in d128["describe"] and "64x64 w8 s2 r0" in d256["describe"]
    assert d128["threads"] == 256 and max(d128["smem"], d256["smem"]) <= 227 * 1024


def test_sm80_forward_tile_table():
    # 64 keys per tile up to head dim 128 (96 up to 64); at 128 the fit needs ptxas
    # register-usage level 0 (an NVRTC option the instantiation carries), and variants that
    # load a captured tensor per score keep 32 keys (64 up to head dim 64)
    plain = _source(ae.compile(), "fwd", 128, 128)
    assert "128x64 w4 mt2 r0" in plain["describe"]
    assert plain["options"] == ["-Xptxas=--register-usage-level=0"]
    rel = VARIANTS["relative_bias"]()
    rel_src = _source(rel, "fwd", 128, 128)
    assert "128x32 w4 mt2" in rel_src["describe"] and rel_src["options"] == []
    d64 = _source(ae.compile(), "fwd", 64, 64)
    assert "128x96 w4 mt2" in d64["describe"] and d64["options"] == []
    rel64 = _source(rel, "fwd", 64, 64)
    assert "128x64 w4 mt2" in rel64["describe"]


def test_host_and_template_agree_on_shared_memory():
    # One formula (templates/sm80/shapes.h) for both; the template checks it against its own
    # layout at compile time (test_instantiation_compiles_without_spills compiles it).
    src = _source(ae.compile(), "bwd", 128, 128)
    assert src["smem"] == 2 * (128 * 272 + 2 * 64 * 272 + 2 * 128 * 72) + 2 * 2 * 4 * 64


# Custom row normalizations (common/normalizers.h CustomLog / CustomLinear): the forwards of
# both families, for the ready normalizers and one with a learnable tensor in each function.
def _learnable_linear():
    w, g, c = (torch.ones(16, requires_grad=True) for _ in range(3))
    return ae.Normalizer(lambda x, b, h, q, k: torch.relu(x) * w[h],
                         stat=lambda x, b, h, q, k: torch.abs(x) + g[h],
                         finish=lambda L, b, h, q: c[h] / (1.0 + L))


CUSTOM_NORMS = {
    "retention": lambda: ae.compile(lambda s, b, h, q, k: s * 0.97 ** (q - k).float(), mods.causal,
                                    normalize=ae.normalizers.retention),
    "relu_normalized": lambda: ae.compile(mask_mod=mods.sliding_window(256),
                                          normalize=ae.normalizers.relu_normalized),
    "sink": lambda: ae.compile(mods.softcap(30.0), mods.causal,
                               normalize=ae.normalizers.softmax_with_sink(torch.zeros(16))),
    "learnable_linear": lambda: ae.compile(mask_mod=mods.causal, normalize=_learnable_linear()),
    "detached_log": lambda: ae.compile(normalize=ae.Normalizer(
        lambda x, b, h, q, k: x, log_domain=True, detach_stats=True)),
    "learnable_sink": lambda: ae.compile(mods.alibi(mods.alibi_slopes(16)), mods.causal,
                                         normalize=ae.normalizers.softmax_with_sink(
                                             torch.zeros(16, requires_grad=True))),
}


@pytest.mark.parametrize("kind", ["fwd", "fwd90"])
@pytest.mark.parametrize("dims", [(128, 128), (64, 64)], ids=lambda d: f"{d[0]}-{d[1]}")
@pytest.mark.parametrize("name", sorted(CUSTOM_NORMS))
def test_custom_normalization_forward_compiles_without_spills(name, dims, kind, monkeypatch):
    monkeypatch.delenv("AE_CUSTOM_NORM", raising=False)
    monkeypatch.setenv("AE_KV_SPLITS", "4")  # refused: the combine merges softmax rows only
    attn = CUSTOM_NORMS[name]()
    assert attn.variant.normalize == "custom"
    info = _source(attn, kind, *dims)
    assert "split" not in info["describe"]
    assert "finish_row" in info["source"]
    _compiles_without_spills(info, kind)


# Their backward: the main kernels with the variant's weight (and a linear stat's grad_stat),
# after the row pass of their finish (bwd_rows_custom); learnable tensors in every function.
@pytest.mark.parametrize("kind", ["bwd", "bwd90", "bwd_rows_custom"])
@pytest.mark.parametrize("name", ["learnable_sink", "detached_log", "sink", "retention",
                                  "relu_normalized", "learnable_linear"])
def test_custom_normalization_backward_compiles_without_spills(name, kind, monkeypatch):
    monkeypatch.delenv("AE_CUSTOM_NORM", raising=False)
    attn = CUSTOM_NORMS[name]()
    grads = [t.requires_grad for t in attn.buffers]
    if kind == "bwd_rows_custom":
        info = _source(attn, "bwd", 128, 128, grads=grads)
        assert "bwd_rows_custom" in info["plan"], info["plan"]
        dtypes = [str(t.dtype).replace("torch.", "") for t in attn.buffers]
        info = attn.variant.kernel_source("bwd_rows_custom", 128, 128, True, dtypes,
                                          buffer_grads=grads)
        assert "custom_rows" in info["source"]
        if name in ("learnable_sink", "learnable_linear"):  # finish's gradients, per row
            assert "atomicAdd(va.buf[" in info["source"]
        for arch in ["sm_80", "sm_90a"]:
            (report,) = _C.jit_check_arches(info["source"], info["entry"], arches=[arch],
                                            options=[])
            assert report["ok"], f"{info['describe']} {arch}: {report['error']}"
        return
    _compiles_without_spills(_source(attn, kind, 128, 128, grads=grads), kind)


def test_custom_normalization_kernels_turn_off(monkeypatch):
    monkeypatch.setenv("AE_CUSTOM_NORM", "0")
    attn = CUSTOM_NORMS["retention"]()
    for kind in ("fwd90", "bwd90"):
        with pytest.raises(Exception, match="AE_CUSTOM_NORM"):
            _source(attn, kind, 128, 128)


# torch.pow in generated code (templates/common/variant_support.h): ae::fpow, or the
# branch-free ae::fpow_i for an integer exponent (a distance, cast or not) in a custom
# normalization's kernels without gradient atomics (retention's decay), a small integer
# constant a product. Each form's code is checked in both families' forwards and the sm90
# backward; the sm90 forward of every form and all three kernels of the tensor and retention
# forms compile without spills (tests/python/test_gpu_pow.py checks their values on a GPU).
FPOW, FPOW_I = r"ae::fpow\(n\d+, ", r"ae::fpow_i\(n\d+, n\d+\)"


@pytest.mark.parametrize("form, expect", [
    ("tensor", (FPOW, FPOW)), ("int", (FPOW, FPOW)), ("cast", (FPOW, FPOW)),
    ("retention", (FPOW_I, FPOW_I)), ("square", (r"= (n\d+) \* \1;",) * 2),
    ("inverse", (r"= 1\.f / n\d+;",) * 2)])
def test_pow_forms(form, expect):
    base = torch.linspace(0.5, 1.0, 16)
    mod = {
        "tensor": lambda s, b, h, q, k: s * base[h] ** (s * 0.01),
        "int": lambda s, b, h, q, k: s * base[h] ** (q - k),
        "cast": lambda s, b, h, q, k: s * base[h] ** (q - k).float(),
        "square": lambda s, b, h, q, k: s * base[h] ** 2,
        "inverse": lambda s, b, h, q, k: s * base[h] ** -1,
        "retention": lambda s, b, h, q, k: s * base[h] ** (q - k).float(),
    }[form]
    attn = ae.compile(mod, mods.causal,
                      normalize=ae.normalizers.retention if form == "retention" else "softmax")
    for kind in ("fwd", "fwd90", "bwd90"):  # expect: (sm80, sm90)
        info = _source(attn, kind, 128, 128)
        want = expect[kind.endswith("90")]
        assert re.search(want, info["source"]) and "powf" not in info["source"], kind
        # Compiled: the sm90 forward of every form (the one a pow has made spill), all three
        # kernels of the two general forms (CI time: a backward compile is ~10 s).
        if kind == "fwd90" or form in ("tensor", "retention"):
            _compiles_without_spills(info, kind)


# AE_PLAIN_LOADS=1 (the A/B switch): every kernel without gradient atomics reads captured
# tensors through plain loads; kernels with atomics keep __ldg. The kernels compile without
# spills, and the spec says " plain" (the registry's key).
def test_plain_loads_switch(monkeypatch):
    base = torch.linspace(0.5, 1.0, 16, requires_grad=True)
    attn = ae.compile(lambda s, b, h, q, k: s * base[h] ** (q - k), mods.causal)
    monkeypatch.delenv("AE_PLAIN_LOADS", raising=False)
    assert "ld<float, true>" not in _source(attn, "fwd90", 128, 128)["source"]
    monkeypatch.setenv("AE_PLAIN_LOADS", "1")
    for kind in ("fwd", "fwd90", "bwd90"):
        info = _source(attn, kind, 128, 128)
        assert info["describe"].endswith(" plain")
        assert "ae::ld<float, true>" in info["source"]
        _compiles_without_spills(info, kind)
    with_grads = _source(attn, "bwd90", 128, 128, grads=[True])["source"]
    assert "ae::ld<float>(" in with_grads and "ae::ld<float, true>" not in with_grads


def _inference_rewrite(name):
    """VARIANTS[name] through the inference entry points' positions rewrite (captured tensors
    [..., q_start, kv_len]): the compiled attention, the rewritten variant, its buffer dtypes."""
    from attention_engine.positions import with_positions
    attn = VARIANTS[name]()
    variant = _C.build_variant(with_positions(attn._ref.trace_json))
    return attn, variant, [str(t.dtype).replace("torch.", "") for t in attn.buffers] + ["int64", "int64"]


# The per-batch key lengths layout (templates/common/kv_layout.h KvLengthsLayout): the forwards
# of with_kvcache's positions rewrite (python/attention_engine/positions.py) without its
# bound kv_idx < kv_len[b], which the layout takes: the sm90 forward whole and split, the sm80
# prefill forward, and the decode template at one query (GQA-packed rows: still the rewrite).
KV_LENGTHS_CASES = [("plain", "fwd90", 4096, "1"), ("plain", "fwd90", 1, "4"),
                    ("causal", "fwd90", 64, "4"), ("alibi", "fwd90", 4096, "1"),
                    ("plain", "fwd", 4096, "1"), ("causal", "decode", 1, "4"),
                    ("softcap", "decode", 1, "1")]


@pytest.mark.parametrize("case", KV_LENGTHS_CASES, ids=lambda c: "-".join(map(str, c)))
def test_kv_lengths_forward_compiles_without_spills(case, monkeypatch):
    name, kind, q_len, splits = case
    monkeypatch.setenv("AE_KV_SPLITS", splits)
    if kind == "decode":
        monkeypatch.setenv("AE_DECODE", "1")
    attn, variant, dtypes = _inference_rewrite(name)
    assert variant.kv_lengths_buffer == len(attn.buffers) + 1  # [..., q_start, kv_len]
    info = variant.kernel_source("fwd", 128, 128, True, dtypes, q_len=q_len, kv_lengths=True,
                                 family="sm90" if kind == "fwd90" else "sm80")
    assert " kvlens" in info["describe"], info["describe"]
    assert "ae::KvLengthsLayout" in info["source"]
    assert (" split" in info["describe"]) == (splits != "1"), info["describe"]
    assert (" dec" in info["describe"]) == (kind == "decode"), info["describe"]
    _compiles_without_spills(info, "fwd90" if kind == "fwd90" else "fwd")


# A paged KV cache (PagedLayout<page>: the sm90 forward's producer loads keys in boxes of a page
# at most, through the page table), with the positions rewrite's lengths, whole and split.
PAGED_CASES = [("plain", 16, 1, "1"), ("plain", 64, 1, "4"), ("plain", 256, 1, "4"),
               ("causal", 16, 4096, "1"), ("alibi", 64, 1, "4"), ("document", 128, 64, "1")]


@pytest.mark.parametrize("case", PAGED_CASES, ids=lambda c: "-".join(map(str, c)))
def test_paged_forward_compiles_without_spills(case, monkeypatch):
    name, page, q_len, splits = case
    monkeypatch.setenv("AE_KV_SPLITS", splits)
    attn, variant, dtypes = _inference_rewrite(name)
    info = variant.kernel_source("fwd", 128, 128, True, dtypes, q_len=q_len, kv_lengths=True,
                                 page_size=page)
    assert info["describe"].endswith(f" page{page}"), info["describe"]
    assert f"ae::PagedLayout<{page}>" in info["source"]
    _compiles_without_spills(info, "fwd90")


# The sm80 family on a paged cache (PagedLayout<page>: sm80/tile_io.h load_paged, each row's
# cp.async at its page, the tile's pages held by a warp's lanes): the prefill forward and the
# decode template (AE_DECODE) of the positions rewrite, whole and split, at pages of 16, 64 and
# 256 rows, at 24 (no tile divides it: a row's page per row) and 8 (D64: one row per page), and
# at D96 (the per-chunk loader). Built for sm_80 and sm_90a (the sm80 family runs on Hopper
# where no sm90 tile fits the pages, or with AE_DECODE).
PAGED80_CASES = [  # (variant, page, q_len, AE_KV_SPLITS, head dim)
    ("plain", 16, 4096, "1", 128), ("causal", 16, 4096, "1", 128), ("alibi", 64, 4096, "1", 128),
    ("softcap", 256, 4096, "1", 128), ("relative_bias", 16, 4096, "1", 128),
    ("plain", 64, 64, "4", 128), ("plain", 24, 4096, "1", 96), ("plain", 8, 4096, "1", 64),
    ("plain", 16, 1, "1", 128), ("plain", 64, 1, "4", 128), ("causal", 16, 1, "4", 128),
    ("alibi", 64, 1, "1", 128), ("softcap", 256, 1, "4", 128), ("relative_bias", 16, 1, "1", 128),
    ("plain", 24, 1, "1", 96)]
# Known: the dense sm80 prefill forwards of these rewrites spill on these arches at every
# register-usage level (the per-batch lengths layout, no pages: causal 88 bytes at level 0 on
# sm_90a, as the varlen note below says; ALiBi 16 at level 0 on sm_80). Their paged kernels may
# spill no more than their dense twins; every other case, not at all. (Split, as a few query
# rows with a small batch run, the paged causal and ALiBi prefill forwards spill 20 and 32 bytes
# more than their twins on sm_80: bench/RESULTS.md; not built here.)
_PAGED80_DENSE_SPILLS = {("causal", "sm_90a"), ("alibi", "sm_80")}


def _least_spill(info, arch):
    """The fewest spilled bytes (stores + loads) over the runtime's options, as it keeps them."""
    least = None
    for options in [info["options"], *info["fallback_options"]]:
        (report,) = _C.jit_check_arches(info["source"], info["entry"], arches=[arch],
                                        options=options)
        assert report["ok"], f"{info['describe']} {arch}: {report['error']}"
        spilled = report["spill_stores"] + report["spill_loads"]
        least = spilled if least is None else min(least, spilled)
    return least


@pytest.mark.parametrize("case", PAGED80_CASES, ids=lambda c: "-".join(map(str, c)))
def test_sm80_paged_forward_compiles_without_spills(case, monkeypatch):
    name, page, q_len, splits, d = case
    monkeypatch.setenv("AE_KV_SPLITS", splits)
    decode = q_len <= 16
    if decode:
        monkeypatch.setenv("AE_DECODE", "1")
    attn, variant, dtypes = _inference_rewrite(name)
    source = lambda **kw: variant.kernel_source("fwd", d, d, True, dtypes, q_len=q_len,
                                                kv_lengths=True, family="sm80", **kw)
    info = source(page_size=page)
    assert info["describe"].endswith(f" page{page}"), info["describe"]
    assert f"ae::PagedLayout<{page}>" in info["source"]
    assert (" dec" in info["describe"]) == decode, info["describe"]
    assert (" split" in info["describe"]) == (splits != "1"), info["describe"]
    for arch in ["sm_80", "sm_90a"]:
        if not decode and (name, arch) in _PAGED80_DENSE_SPILLS:
            dense = source()
            assert dense["describe"] == info["describe"].replace(f" page{page}", " kvlens")
            assert _least_spill(info, arch) <= _least_spill(dense, arch), (info["describe"], arch)
        else:
            _compiles_without_spills(info, "fwd", [arch])


# Packed sequences (VarlenLayout: rows at each sequence's offset in cu_seqlens, tiles past a
# sequence's queries leave): the varlen op's forwards of the positions rewrite, the sm90
# forward whole and split (with its combine), the sm80 prefill forward and the decode template.
# (The sm80 forward of the causal rewrite spills when built for sm_90a, 40 to 76 bytes, as the
# kvlens one does: only where the sm90 forward is turned off; built for sm_80 it does not.)
VARLEN_CASES = [("plain", "fwd90", 4096, "1"), ("causal", "fwd90", 4096, "1"),
                ("alibi", "fwd90", 4096, "1"), ("softcap", "fwd90", 4096, "1"),
                ("document", "fwd90", 4096, "1"), ("plain", "fwd90", 1, "4"),
                ("plain", "fwd", 4096, "1"), ("plain", "decode", 1, "4")]


@pytest.mark.parametrize("case", VARLEN_CASES, ids=lambda c: "-".join(map(str, c)))
def test_varlen_forward_compiles_without_spills(case, monkeypatch):
    name, kind, q_len, splits = case
    monkeypatch.setenv("AE_KV_SPLITS", splits)
    if kind == "decode":
        monkeypatch.setenv("AE_DECODE", "1")
    attn, variant, dtypes = _inference_rewrite(name)
    family = "sm90" if kind == "fwd90" else "sm80"
    info = variant.kernel_source("fwd", 128, 128, True, dtypes, q_len=q_len, varlen=True,
                                 family=family)
    assert info["describe"].endswith(" varlen"), info["describe"]
    assert "ae::VarlenLayout" in info["source"]
    assert (" split" in info["describe"]) == (splits != "1"), info["describe"]
    _compiles_without_spills(info, "fwd90" if kind == "fwd90" else "fwd")
    if splits != "1":  # the combine on the same layout
        combine = variant.kernel_source("fwd_combine", 128, 128, True, dtypes, q_len=q_len,
                                        varlen=True, family=family)
        assert "ae::VarlenLayout" in combine["source"], combine["source"][-400:]
        _compiles_without_spills(combine, "fwd")


# The varlen op's backward (attention_varlen_backward): the sm90 and sm80 backwards on the
# packed-sequence layout (CTAs past their sequence's keys exit). A masked variant's sm90
# backward reads its sequence's query count from shared memory and is built at register-usage
# level 0 (the planner's): at the default level it spilled.
VARLEN_BWD_CASES = [("plain", "sm90"), ("causal", "sm90"), ("alibi", "sm90"), ("softcap", "sm90"),
                    ("document", "sm90"), ("plain", "sm80"), ("causal", "sm80")]


@pytest.mark.parametrize("case", VARLEN_BWD_CASES, ids=lambda c: "-".join(c))
def test_varlen_backward_compiles_without_spills(case):
    name, family = case
    attn, variant, dtypes = _inference_rewrite(name)
    info = variant.kernel_source("bwd", 128, 128, True, dtypes, varlen=True, family=family)
    assert info["describe"].endswith(" varlen"), info["describe"]
    assert "ae::VarlenLayout" in info["source"]
    if family == "sm90" and attn.variant.has_mask:
        assert " r0" in info["describe"], info["describe"]
    _compiles_without_spills(info, "bwd90" if family == "sm90" else "bwd")


@pytest.mark.parametrize("name", ["causal", "document"])
def test_varlen_block_state_compiles(name):
    """The block-state pass of packed sequences (per-batch lengths from the layout)."""
    attn, variant, dtypes = _inference_rewrite(name)
    info = variant.kernel_source("block_state", 128, 128, True, dtypes, varlen=True,
                                 family="sm90")
    assert "ae::block_state<ae::VarlenLayout>" in info["source"], info["source"][-300:]
    _compiles_without_spills(info, "block_state")


# MLA decode (sm90/mla_decode.h): the latent head's 576 columns with V its first 512 (v_in_k),
# the query heads packed as rows (positions rewrite, then GQA packing as with_kvcache makes
# it), whole and split, dense and paged (page 64, FlashMLA's), masked and not.
MLA_CASES = [("plain", 0, "1"), ("plain", 0, "4"), ("plain", 64, "4"), ("causal", 0, "1"),
             ("causal", 64, "4"), ("alibi", 0, "1"), ("softcap", 64, "1"),
             ("sliding_window", 0, "4"), ("relative_bias", 0, "1"), ("sigmoid_none", 0, "1")]


def _mla_rewrite(name, group=128, sq=1):
    from attention_engine.gqa_pack import gqa_packed
    from attention_engine.positions import with_positions
    attn = VARIANTS[name]()
    variant = _C.build_variant(gqa_packed(with_positions(attn._ref.trace_json, sq), group, sq))
    return attn, variant, [str(t.dtype).replace("torch.", "") for t in attn.buffers] + ["int64"]


@pytest.mark.parametrize("case", MLA_CASES, ids=lambda c: "-".join(map(str, c)))
def test_mla_decode_compiles_without_spills(case, monkeypatch):
    name, page, splits = case
    monkeypatch.setenv("AE_KV_SPLITS", splits)
    attn, variant, dtypes = _mla_rewrite(name)
    info = variant.kernel_source("fwd", 576, 512, True, dtypes, q_len=128, kv_lengths=True,
                                 page_size=page, v_in_k=True, device="h200")
    assert " mla" in info["describe"] and "sm90/mla_decode.h" in info["source"], info["describe"]
    assert (" split" in info["describe"]) == (splits != "1"), info["describe"]
    assert (f" page{page}" in info["describe"]) == (page > 0), info["describe"]
    _compiles_without_spills(info, "fwd90")


def test_mla_head_dims_without_v_in_k_say_what_the_kernel_needs():
    attn, variant, dtypes = _mla_rewrite("plain")
    with pytest.raises(ValueError, match=r"V is K's first 512 columns"):
        variant.kernel_source("fwd", 576, 512, True, dtypes, q_len=128, kv_lengths=True,
                              device="h200")
    with pytest.raises(ValueError, match=r"V is K's first 512 columns"):  # not on an A100
        variant.kernel_source("fwd", 576, 512, True, dtypes, q_len=128, kv_lengths=True,
                              v_in_k=True, device="a100")
