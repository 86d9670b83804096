"""CI's compile-all check for the gfx90a family (AMD MI250; no GPU needed): every forward and
backward instantiation the tests use, planned for the MI250 device class and compiled by hipRTC, must
use no scratch (spills) and leave at least 2 waves per SIMD by its registers and LDS, as the
code object's metadata (.vgpr_count, .agpr_count, .sgpr_count, .group_segment_fixed_size,
.private_segment_fixed_size) says; and, where Debian's llvm-objdump is installed, the
disassembly has MFMA and exp instructions in its main loop. Skipped where hipRTC cannot be
loaded."""
import os
import re
import shutil
import subprocess
import tempfile

import pytest
import torch

import attention_engine as ae
from attention_engine import _C, mods
from attention_engine.positions import with_positions
from conftest import rtc_available

pytestmark = pytest.mark.skipif(not rtc_available("gfx90a"), reason="hipRTC not available")

VARIANTS = {
    "plain": lambda: ae.compile(),
    "causal": lambda: ae.compile(mask_mod=mods.causal),
    "alibi": lambda: ae.compile(mods.alibi(mods.alibi_slopes(16)), mods.causal),
    "softcap": lambda: ae.compile(mods.softcap(30.0)),
    "document": lambda: ae.compile(mask_mod=mods.document_mask(torch.zeros(64, dtype=torch.long))),
    "sigmoid_none": lambda: ae.compile(mods.sigmoid(-4.0), normalize="none"),
    "relative_bias": lambda: ae.compile(mods.relative_bias(torch.zeros(16, 65), 32)),
    "retention": lambda: ae.compile(lambda s, b, h, q, k: s * 0.97 ** (q - k).float(), mods.causal,
                                    normalize=ae.normalizers.retention),
    # learnable captured tensors: their gradients in the backward (an LDS copy, or global
    # atomics for a table too large for it)
    "relative_bias_grad": lambda: ae.compile(
        mods.relative_bias(torch.zeros(16, 65).requires_grad_(), 32),
        mods.document_mask(torch.zeros(64, dtype=torch.long))),
    "relative_bias_large": lambda: ae.compile(
        mods.relative_bias(torch.zeros(16, 2049).requires_grad_(), 1024), mods.causal),
    "sink": lambda: ae.compile(mods.softcap(5.0), mods.causal,
                               normalize=ae.normalizers.softmax_with_sink(torch.full((16,), 0.5))),
    "alibi_learned": lambda: ae.compile(mods.alibi(mods.alibi_slopes(16).requires_grad_()), mods.causal),
}

# (variant, (d_qk, d_v), bf16, split-KV). GQA changes no instantiation (the group is a kernel
# argument); the planner's choices around it are tests/cpp/test_plan_gfx90a.cc's.
CASES = [(name, dims, True, False) for name in ("plain", "causal", "alibi", "softcap", "document",
                                               "sigmoid_none")
         for dims in ((64, 64), (128, 128), (256, 256))]
CASES += [("plain", (128, 128), False, False), ("causal", (64, 64), False, False),
          ("plain", (256, 256), False, False), ("plain", (96, 96), True, False),
          ("plain", (192, 128), True, False), ("relative_bias", (128, 128), True, False),
          ("retention", (128, 128), True, False),
          ("plain", (128, 128), True, True), ("sigmoid_none", (128, 128), True, True),
          ("causal", (256, 256), True, True)]
# Decode-sized forwards (at most 64 query rows): 16 rows per wave up to D128, split-KV.
FEW_ROWS = [("plain", (128, 128), True, True), ("alibi", (64, 64), True, True),
            ("document", (128, 128), False, True)]

VGPRS_PER_SIMD_LANE, SGPRS_PER_SIMD, LDS_PER_CU, SIMDS_PER_CU, MAX_WAVES = 512, 800, 65536, 4, 8


def _round_up(x, m):
    return (x + m - 1) // m * m


def waves_per_simd(report, threads, dynamic_lds):
    """CDNA2's occupancy from a kernel's registers and LDS: architectural VGPRs (rounded to 4)
    and AGPRs share the 512 per SIMD lane, allocated by 8; SGPRs by 16 of 800; LDS per CU."""
    vgprs = _round_up(_round_up(report["registers"], 4) + max(report["agprs"], 0), 8)
    by_vgpr = VGPRS_PER_SIMD_LANE // vgprs
    by_sgpr = SGPRS_PER_SIMD // _round_up(report["sgprs"], 16)
    lds = report["smem_bytes"] + dynamic_lds
    waves_per_block = threads // 64
    by_lds = LDS_PER_CU // lds * waves_per_block // SIMDS_PER_CU if lds else MAX_WAVES
    return min(by_vgpr, by_sgpr, by_lds, MAX_WAVES)


def _source(name, dims, bf16, split, monkeypatch, q_len=4096):
    monkeypatch.setenv("AE_KV_SPLITS", "4" if split else "1")
    attn = VARIANTS[name]()
    dtypes = [str(t.dtype).replace("torch.", "") for t in attn.buffers]
    info = attn.variant.kernel_source("fwd", *dims, bf16, dtypes, device="mi250", q_len=q_len)
    assert info["family"] == "gfx90a" and '#include "gfx90a/fwd.h"' in info["source"]
    assert (" split" in info["describe"]) == split, info["describe"]
    return info


@pytest.mark.parametrize("case", [c + (4096,) for c in CASES] + [c + (16,) for c in FEW_ROWS],
                         ids=lambda c: f"{c[0]}-{c[1][0]}-{c[1][1]}-{'bf16' if c[2] else 'fp16'}"
                         f"{'-split' if c[3] else ''}{'-q16' if c[4] == 16 else ''}")
def test_gfx90a_forward_compiles_without_scratch_at_two_waves(case, monkeypatch):
    name, dims, bf16, split, q_len = case
    info = _source(name, dims, bf16, split, monkeypatch, q_len)
    if q_len <= 64 and max(dims) <= 128:  # the few-rows tile
        assert info["describe"].split()[4].startswith("64x"), info["describe"]
    (r,) = _C.jit_check_arches(info["source"], info["entry"], arches=["gfx90a"],
                               options=info["options"])
    assert r["ok"], f"{info['describe']}: {r['error']}"
    assert r["registers"] > 0 and r["agprs"] >= 0 and r["sgprs"] > 0, r
    # No scratch: no private segment, no VGPR spilled (an SGPR spill, spill_loads, goes to a
    # lane of a VGPR, not to memory, and is allowed).
    assert r["stack_frame"] == 0 and r["spill_stores"] == 0, f"{info['describe']} uses scratch: {r}"
    assert "warning" not in r["log"].lower(), r["log"]
    waves = waves_per_simd(r, info["threads"], info["smem"])
    assert waves >= 2, f"{info['describe']}: {waves} wave(s) per SIMD: {r}, LDS {info['smem']}"


# The backward's instantiations: (variant, (d_qk, d_v), bf16, deterministic); the emulated ones
# among them (test_gfx90a_emulated.py).
BWD_CASES = [(name, (128, 128), True, False) for name in ("plain", "causal", "sigmoid_none",
                                                          "relative_bias_large", "alibi_learned")]
BWD_CASES += [("causal", (64, 64), True, False), ("relative_bias_grad", (128, 128), False, False),
              ("sigmoid_none", (96, 64), False, False), ("causal", (16, 16), True, False),
              ("document", (128, 64), True, False), ("softcap", (112, 112), False, False),
              ("retention", (64, 64), True, False), ("sink", (32, 32), True, False),
              ("causal", (32, 32), True, True), ("document", (128, 128), True, True)]
# Past head dim 128: pairs of waves sharing keys (gfx90a/bwd.h kPaired), 32 or 16 query rows;
# a captured tensor's LDS copy (at 192/192 beside 16 rows: 32 take all 64 KB) or global
# atomics; a custom normalization; the deterministic mode.
BWD_CASES += [("plain", (192, 128), True, False), ("causal", (256, 256), True, False),
              ("causal", (256, 128), False, False), ("document", (128, 256), True, False),
              ("softcap", (160, 160), False, False), ("sigmoid_none", (208, 144), True, False),
              ("alibi_learned", (192, 192), True, False), ("relative_bias_grad", (256, 256), False, False),
              ("relative_bias_large", (192, 128), True, False), ("retention", (256, 256), True, False),
              ("causal", (256, 256), True, True), ("document", (192, 128), True, True)]


def _bwd_source(name, dims, bf16, step="bwd", deterministic=False):
    attn = VARIANTS[name]()
    dtypes = [str(t.dtype).replace("torch.", "") for t in attn.buffers]
    grads = [t.requires_grad for t in attn.buffers]
    info = attn.variant.kernel_source(step, *dims, bf16, dtypes, device="mi250", buffer_grads=grads,
                                      deterministic=deterministic)
    assert "bwd gfx90a" in info["plan"], info["plan"]
    assert step != "bwd" or '#include "gfx90a/bwd.h"' in info["source"]
    return info


@pytest.mark.parametrize("case", BWD_CASES,
                         ids=lambda c: f"{c[0]}-{c[1][0]}-{c[1][1]}-{'bf16' if c[2] else 'fp16'}"
                         f"{'-det' if c[3] else ''}")
def test_gfx90a_backward_compiles_without_scratch_at_two_waves(case):
    name, dims, bf16, deterministic = case
    info = _bwd_source(name, dims, bf16, deterministic=deterministic)
    assert info["describe"].endswith(" det") == deterministic, info["describe"]
    if name == "relative_bias_grad":  # the gradient's LDS copy, past the template's LDS
        assert info["describe"].endswith("dbuf0 smem"), info["describe"]
    if name == "relative_bias_large":
        assert info["describe"].endswith("dbuf0"), info["describe"]
    (r,) = _C.jit_check_arches(info["source"], info["entry"], arches=["gfx90a"],
                               options=info["options"])
    assert r["ok"], f"{info['describe']}: {r['error']}"
    assert r["stack_frame"] == 0 and r["spill_stores"] == 0, f"{info['describe']} uses scratch: {r}"
    assert "warning" not in r["log"].lower(), r["log"]
    waves = waves_per_simd(r, info["threads"], info["smem"])
    assert waves >= 2, f"{info['describe']}: {waves} wave(s) per SIMD: {r}, LDS {info['smem']}"
    if name in ("retention", "sink"):  # a custom normalization's row pass runs first, for gfx90a too
        rows = _bwd_source(name, dims, bf16, "bwd_rows_custom")
        (r,) = _C.jit_check_arches(rows["source"], rows["entry"], arches=["gfx90a"])
        assert r["ok"] and r["stack_frame"] == 0, r


# Other layouts (common/kv_layout.h) as the varlen and KV-cache ops plan them: the variant's
# positions rewrite, whose key bound the layout takes. (variant, (d_qk, d_v), bf16, q_len,
# split-KV); q_len 16 plans the few-rows tile.
VARLEN_CASES = [("plain", (64, 64), True, 4096, False), ("causal", (128, 128), True, 4096, False),
                ("alibi", (128, 128), False, 4096, False), ("softcap", (256, 256), True, 4096, False),
                ("causal", (128, 128), True, 16, True), ("plain", (64, 64), False, 16, True)]
KV_LENGTHS_CASES = [("causal", (128, 128), True, 4096, False), ("alibi", (64, 64), True, 16, True),
                    ("plain", (256, 256), False, 16, True), ("softcap", (128, 128), True, 256, False)]
# Pages (a KV cache's call with its lengths): (variant, (d_qk, d_v), bf16, q_len, split-KV,
# page size).
PAGED_CASES = [("causal", (128, 128), True, 4096, False, 16), ("alibi", (64, 64), True, 16, True, 64),
               ("plain", (256, 256), False, 16, True, 16), ("softcap", (128, 128), True, 256, False, 64),
               ("plain", (128, 128), True, 1, True, 8), ("causal", (64, 64), False, 4096, False, 24)]
VARLEN_BWD_CASES = [("plain", (128, 128), True), ("causal", (64, 64), True),
                    ("alibi", (128, 128), False), ("sigmoid_none", (96, 64), True),
                    ("causal", (192, 128), True), ("plain", (256, 256), False)]


def _layout_source(name, dims, bf16, step, q_len=4096, split=False, layout="varlen",
                   monkeypatch=None, page=0):
    if monkeypatch is not None:
        monkeypatch.setenv("AE_KV_SPLITS", "4" if split else "1")
    attn = VARIANTS[name]()
    if layout == "varlen":  # (the op's two captured lengths)
        variant = _C.build_variant(with_positions(attn._ref.trace_json))
        dtypes = [str(t.dtype).replace("torch.", "") for t in attn.buffers] + ["int64", "int64"]
    else:  # a KV cache's call: its queries are the last q_len tokens
        variant = _C.build_variant(with_positions(attn._ref.trace_json, q_len))
        dtypes = [str(t.dtype).replace("torch.", "") for t in attn.buffers] + ["int64"]
    info = variant.kernel_source(step, *dims, bf16, dtypes, device="mi250", q_len=q_len,
                                 page_size=page,
                                 **{("varlen" if layout == "varlen" else "kv_lengths"): True})
    assert step not in ("fwd", "bwd") or info["family"] == "gfx90a", info["plan"]
    return info


def _check_two_waves(info, **kw):
    (r,) = _C.jit_check_arches(info["source"], info["entry"], arches=["gfx90a"],
                               options=info["options"])
    assert r["ok"], f"{info['describe']}: {r['error']}"
    assert r["stack_frame"] == 0 and r["spill_stores"] == 0, f"{info['describe']} uses scratch: {r}"
    assert "warning" not in r["log"].lower(), r["log"]
    waves = waves_per_simd(r, info["threads"], info["smem"])
    assert waves >= 2, f"{info['describe']}: {waves} wave(s) per SIMD: {r}, LDS {info['smem']}"


def _layout_id(c):
    return (f"{c[0]}-{c[1][0]}-{c[1][1]}-{'bf16' if c[2] else 'fp16'}"
            + (f"-q{c[3]}" if len(c) > 3 and c[3] != 4096 else "") + ("-split" if len(c) > 4 and c[4] else ""))


@pytest.mark.parametrize("case", [("varlen",) + c + (0,) for c in VARLEN_CASES] +
                         [("kv_lengths",) + c + (0,) for c in KV_LENGTHS_CASES] +
                         [("paged",) + c for c in PAGED_CASES],
                         ids=lambda c: f"{c[0]}-{_layout_id(c[1:])}" + (f"-page{c[-1]}" if c[-1] else ""))
def test_gfx90a_layout_forwards_compile_without_scratch_at_two_waves(case, monkeypatch):
    layout, name, dims, bf16, q_len, split, page = case
    info = _layout_source(name, dims, bf16, "fwd", q_len, split, layout, monkeypatch, page)
    mark = " varlen" if layout == "varlen" else f" page{page}" if page else " kvlens"
    assert info["describe"].endswith(mark) and (" split" in info["describe"]) == split, info["describe"]
    assert '#include "gfx90a/fwd.h"' in info["source"]
    _check_two_waves(info)
    if split:  # the combine on the layout's rows
        combine = _layout_source(name, dims, bf16, "fwd_combine", q_len, split, layout, monkeypatch,
                                 page)
        assert combine["describe"].endswith(" varlen") == (layout == "varlen"), combine["describe"]
        (r,) = _C.jit_check_arches(combine["source"], combine["entry"], arches=["gfx90a"])
        assert r["ok"] and r["stack_frame"] == 0, r


@pytest.mark.parametrize("case", VARLEN_BWD_CASES, ids=_layout_id)
def test_gfx90a_varlen_backward_compiles_without_scratch_at_two_waves(case):
    name, dims, bf16 = case
    info = _layout_source(name, dims, bf16, "bwd")
    assert info["describe"].endswith(" varlen") and '#include "gfx90a/bwd.h"' in info["source"], info["describe"]
    _check_two_waves(info)
    if "block_state" in info["plan"]:  # the per-call table, each sequence's own tiles
        state = _layout_source(name, dims, bf16, "block_state")
        assert state["describe"].endswith(" varlen"), state["describe"]
        (r,) = _C.jit_check_arches(state["source"], state["entry"], arches=["gfx90a"])
        assert r["ok"] and r["stack_frame"] == 0, r


def test_occupancy_arithmetic():
    # 256 VGPRs: 2 waves; 128 VGPRs + 128 AGPRs too; 257: 1; LDS of 40 KB with 4-wave blocks: 1.
    r = {"registers": 256, "agprs": 0, "sgprs": 80, "smem_bytes": 0}
    assert waves_per_simd(r, 256, 16 * 1024) == 2
    assert waves_per_simd(dict(r, registers=128, agprs=128), 256, 0) == 2
    assert waves_per_simd(dict(r, registers=257), 256, 0) == 1
    assert waves_per_simd(dict(r, registers=64), 256, 40 * 1024) == 1
    assert waves_per_simd(dict(r, registers=64), 512, 40 * 1024) == 2


def _objdump():
    for tool in ("llvm-objdump-14", "llvm-objdump-15", "llvm-objdump-16", "llvm-objdump"):
        path = shutil.which(tool)
        if path:
            return path
    return None


def _disassemble(info, name):
    kernel = _C.jit_compile(info["source"], info["entry"], arch="gfx90a", options=info["options"],
                            threads=info["threads"], file_name=f"{name}.cu")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.co")
        with open(path, "wb") as f:
            f.write(kernel.binary)
        return subprocess.run([_objdump(), "-d", "--mcpu=gfx90a", path], check=True,
                              capture_output=True, text=True).stdout


def loop_lines(asm, kernel="ae_fwd"):
    """The instructions of the kernel's main loop: the span of its widest backward branch (an
    s_branch / s_cbranch whose target lies before it)."""
    base = int(re.search(rf"^([0-9a-f]+) <{kernel}>:", asm, re.M).group(1), 16)
    rows = [(int(m.group(1), 16), line) for line in asm.splitlines()
            if (m := re.search(r"//\s*([0-9A-Fa-f]+):", line))]
    best = None
    for i, (at, line) in enumerate(rows):
        m = re.search(rf"\bs_c?branch\w*\s.*<{kernel}\+0x([0-9a-f]+)>", line)
        if not m or base + int(m.group(1), 16) >= at:
            continue
        first = next(k for k, (a, _) in enumerate(rows) if a >= base + int(m.group(1), 16))
        if best is None or i - first > best[1] - best[0]:
            best = (first, i)
    return [line for _, line in rows[best[0]:best[1] + 1]] if best else []


@pytest.mark.skipif(_objdump() is None, reason="no llvm-objdump (Debian package llvm-14)")
@pytest.mark.parametrize("dims, bf16, layout",
                         [((128, 128), True, None), ((128, 128), False, None), ((256, 256), True, None),
                          ((128, 128), True, "varlen"), ((128, 128), True, "kv_lengths"),
                          ((128, 128), True, "paged")],
                         ids=["d128-bf16", "d128-fp16", "d256-bf16", "d128-bf16-varlen",
                              "d128-bf16-kv_lengths", "d128-bf16-page16"])
def test_gfx90a_main_loop_runs_mfma_and_exp(dims, bf16, layout, monkeypatch):
    info = (_layout_source("causal", dims, bf16, "fwd", layout=layout, monkeypatch=monkeypatch,
                           page=16 if layout == "paged" else 0)
            if layout else _source("causal", dims, bf16, False, monkeypatch))
    asm = _disassemble(info, "fwd")
    loop = "\n".join(loop_lines(asm))
    tile, waves = info["describe"].split()[4:6]  # "128x32", "w4"
    block_m, block_n = map(int, tile.split("x"))
    rows = block_m // int(waves[1:])  # per wave: the MFMA's N
    depth = 256 // rows  # its K: 8 (32x32x8) or 16 (16x16x16)
    mfma = ("v_mfma_f32_32x32x8" if rows == 32 else "v_mfma_f32_16x16x16") + \
        ("bf16_1k" if bf16 else "f16")
    assert mfma in loop, f"no {mfma} in the main loop of {info['describe']}"
    # S^T = K Q^T and O^T = V^T P^T of one key block, each MFMA once
    per_block = dims[0] // depth * (block_n // rows) + block_n // depth * (dims[1] // rows)
    assert loop.count(mfma) >= per_block, (loop.count(mfma), per_block)
    assert "v_exp_f32" in loop  # exp2 on the transcendental unit
    assert "scratch_" not in asm and "buffer_store" not in asm  # nothing spilled


@pytest.mark.skipif(_objdump() is None, reason="no llvm-objdump (Debian package llvm-14)")
@pytest.mark.parametrize("name, dims, bf16, varlen",
                         [("causal", (128, 128), True, False), ("plain", (96, 64), False, False),
                          ("causal", (128, 128), True, True), ("causal", (256, 256), True, False),
                          ("plain", (192, 128), False, False)],
                         ids=["causal-d128-bf16", "plain-d96-64-fp16", "causal-d128-bf16-varlen",
                              "causal-d256-bf16", "plain-d192-128-fp16"])
def test_gfx90a_backward_main_loop_runs_mfma(name, dims, bf16, varlen):
    info = _layout_source(name, dims, bf16, "bwd") if varlen else _bwd_source(name, dims, bf16)
    asm = _disassemble(info, "bwd")
    loop = "\n".join(loop_lines(asm, "ae_bwd"))
    mfma = "v_mfma_f32_16x16x16" + ("bf16_1k" if bf16 else "f16")
    block_m, block_n = map(int, info["describe"].split()[4].split("x"))
    waves = int(info["describe"].split()[5][1:])
    # per query block and wave: S and dK^T over d_qk, dP and dV^T over d_v, 16 queries per
    # tile, and dQ^T for the wave's head-dim tiles over the block's keys (paired waves: each
    # runs half of the first four, the code has all of them)
    tiles = block_m // 16
    dq_tiles = -(-(dims[0] // 16) // waves)
    per_block = tiles * (2 * dims[0] // 16 + 2 * dims[1] // 16) + tiles * block_n // 16 * dq_tiles
    assert loop.count(mfma) >= per_block, (loop.count(mfma), per_block)
    assert "global_atomic_add_f32" in loop  # dQ, without a compare-and-swap loop
    assert "global_atomic_cmpswap" not in asm
    assert "scratch_" not in asm and "buffer_store" not in asm
