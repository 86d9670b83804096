"""The NVIDIA forwards run on the CPU: their generated source compiled by the host's g++ over
tests/emu/cuda_host.h (a fiber per GPU thread; barriers for __syncthreads, a warp's shuffles,
named barriers and mbarriers) with tests/emu/shims standing in for the instructions (TMA loads
with the 128-byte swizzle, wgmma from shared-memory descriptors and register fragments,
stmatrix; cp.async, ldmatrix, mma.sync), launched block by block as the runner would, and
checked against the reference executor. The sm90 and sm80 forwards and the decode template
have passed their GPU tests, so their cases here check the emulator's model of those
instructions; the same model ran kernels before any GPU had (the MLA decode template, packed
sequences (VarlenLayout), the sm80 family's pages: all GPU-tested since) and runs the block
tensors' tables. Skipped without g++ 12 or newer."""
import atexit
import hashlib
import math
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import attention_engine as ae
from attention_engine import _C, mods
from attention_engine.gqa_pack import gqa_packed, pack_shape
from attention_engine.positions import with_positions

from conftest import host_gxx

ROOT = pathlib.Path(__file__).resolve().parents[2]
EMU = ROOT / "tests" / "emu"

_gxx = host_gxx  # (the emulators' compiler: g++ 12 or newer)

pytestmark = [pytest.mark.skipif(_gxx() is None, reason="needs g++ 12 or newer"),
              pytest.mark.xdist_group("nvidia_emulated")]

_POOL = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))
_BUILDS = {}
_BUILD_DIR = pathlib.Path(tempfile.mkdtemp(prefix="ae_emu_nv_"))
atexit.register(shutil.rmtree, _BUILD_DIR, ignore_errors=True)


def _build(sources, main, tma_maps, smem):
    """The emulated binary of kernel sources over tests/emu/<main>: tma_maps the main entry's
    tensor maps (0 for the sm80 family), smem its shared-memory array (namespace, name)."""
    def compile_one(path):
        files = []
        for n, text in enumerate(sources):
            files.append(path / f"kernel{n}.cc")
            files[-1].write_text(text)
        subprocess.run([_gxx(), "-std=c++20", "-O1", "-fno-extern-tls-init", "-Wno-psabi",
                        "-I", str(EMU / "shims"), "-I", str(ROOT / "templates"), "-I", str(EMU),
                        "-include", "cuda_host.h", f"-DAE_EMU_TMA_MAPS={tma_maps}",
                        f"-DAE_EMU_SMEM_NS={smem[0]}", f"-DAE_EMU_SMEM_NAME={smem[1]}",
                        *map(str, files), str(EMU / main), "-o", str(path / "run")], check=True)
        return path / "run"
    key = hashlib.sha1("\0".join((main, str(tma_maps), str(smem), *sources)).encode()).hexdigest()[:16]
    if key not in _BUILDS:
        (_BUILD_DIR / key).mkdir()
        _BUILDS[key] = _POOL.submit(compile_one, _BUILD_DIR / key)
    return _BUILDS[key]


def _fwd_source(variant, *args, **kwargs):
    """kernel_source's forward, with the block-state pass's source where the plan has one
    (the emulator runs it first: the tables a GPU run would walk) and the split-KV combine's
    (run after it, as on a GPU)."""
    info = variant.kernel_source("fwd", *args, **kwargs)
    steps = {line.split()[0] for line in info["plan"].splitlines() if line.strip()}
    for step in ("block_state", "block_state_blocks", "fwd_combine", "pool_map"):
        if step in steps:
            info[step + "_source"] = variant.kernel_source(step, *args, **kwargs)["source"]
    return info


def _bits(t):
    return t.detach().contiguous().view(torch.int16).numpy().tobytes()


def _tensor_args(name, t, box):
    """A [B, H, S, D] view's strides (elements), and its tensor map as the runner's tma_map
    makes it: dims innermost first, byte strides of rows, heads and batch, box rows."""
    s = t.stride()
    return {f"{name}_stride": s[:3],
            f"t{name}_dims": [t.shape[3], t.shape[2], t.shape[1], t.shape[0]],
            f"t{name}_bytes": [2 * s[2], 2 * s[1], 2 * s[0]], f"t{name}_box": [box]}


def layout_skv(k, layout):
    return (layout or {}).get("skv", k.shape[2])


def emulate(info, q, k, v, buffers, *, o_shape, lse_numel, layout=None, v_in_k=False, pool=0):
    """Runs the planned forward (kernel_source's dict) on q / k / v given as the kernel sees
    them ([B, H, S, D] views whose storage the emulator gets whole: q, k, v are views of their
    own contiguous bases), returns (o [o_shape] float, lse): a split-KV launch's merged by the
    combine kernel. pool: the gate-training forward's keys per block; then also its block
    maxima [B, Hq, n_pool_blocks, Sq] and the map its pool_map step makes of them."""
    desc = info["describe"].split()
    bm, bn = map(int, desc[4].split("x"))
    splits = int(os.environ.get("AE_KV_SPLITS", "1")) if " split" in info["describe"] else 1
    if splits > 1:  # as the planner counts them: ranges of whole blocks, none empty
        n_kv = -(-layout_skv(k, layout) // bn)
        splits = -(-n_kv // -(-n_kv // min(splits, n_kv)))
    mla = " mla" in info["describe"]
    page = int(re.search(r" page(\d+)", info["describe"]).group(1)) if " page" in info["describe"] else 0
    kv_box = min(bn, page) if page else bn
    main = "nvidia_fwd_main.cc"
    sources = [info["source"]] + [info[step] for step in ("block_state_source",
                                                          "block_state_blocks_source",
                                                          "fwd_combine_source",
                                                          "pool_map_source") if step in info]
    if desc[0] == "fwd90":
        binary = _build(sources, main, 2 if mla else 3, ("sm90", "smem_raw")).result()
    else:  # the sm80 family: no tensor maps; the decode template's array is smem_raw
        binary = _build(sources, main, 0,
                        ("sm80", "smem_raw" if " dec" in info["describe"] else "smem")).result()
    layout = layout or {}
    B, Hq, Sq = layout.get("grid", (q.shape[0], q.shape[1], q.shape[2]))
    args = {"B": [B], "Hq": [Hq], "Hkv": [k.shape[1]], "Sq": [Sq],
            "Skv": [layout_skv(k, layout)], "Dqk": [q.shape[3]], "Dv": [v.shape[3]],
            "block_m": [bm], "block_n": [bn], "threads": [info["threads"]], "smem": [info["smem"]],
            "splits": [splits], "masked": [int("block_state" in info["plan"])],
            "scale": [1 / math.sqrt(q.shape[3])], "nbuf": [len(buffers)],
            "o_numel": [math.prod(o_shape)], "lse_numel": [lse_numel]}
    args.update(_tensor_args("q", q, bm))
    args.update(_tensor_args("k", k, kv_box))
    args.update(_tensor_args("v", v, kv_box))
    o_strides = layout.get("o_stride")
    if o_strides is None:  # dense [B, Hq, Sq, Dv]
        o_strides = [Hq * Sq * v.shape[3], Sq * v.shape[3], v.shape[3]]
    args["o_stride"] = o_strides
    if v_in_k:
        args["v_in_k"] = [1]
    if pool:
        args["pool"] = [pool]
    for key in ("rest_b", "rest_h"):  # a block tensor's rest table: its own batch and head flags
        if key in layout:
            args[key] = [int(layout[key])]
    # The tables' half tiles as the planner sets them (the sm90 forward's two warpgroups of 64
    # rows; planner.cc add_block_states), unless the test says otherwise.
    args["half_m"] = [layout.get("half_m", 64 if desc[0] == "fwd90" and not mla else 0)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        (tmp / "q.bin").write_bytes(_bits(layout.get("q_base", q)))
        (tmp / "k.bin").write_bytes(_bits(layout.get("k_base", k)))
        if not v_in_k:
            (tmp / "v.bin").write_bytes(_bits(layout.get("v_base", v)))
        for i, t in enumerate(buffers):
            (tmp / f"buf{i}.bin").write_bytes(t.detach().contiguous().view(torch.uint8).numpy().tobytes())
            args[f"buf{i}"] = list(t.shape)
        for name in ("kv_lens", "table", "cu_q", "cu_k"):
            if name in layout:
                (tmp / f"{name}.bin").write_bytes(layout[name].contiguous().numpy().tobytes())
        if "kv_lens" in layout:
            args["kv_lens"] = [layout["kv_lens"].element_size()]
        if "table" in layout:
            args["max_pages"] = [layout["table"].shape[1]]
            args["num_pages"] = [layout["k_base"].shape[0]]
        if "cu_q" in layout:
            args["q_total"] = [layout["q_total"]]
        (tmp / "args.txt").write_text("\n".join(f"{k} {' '.join(map(str, v))}" for k, v in args.items()))
        run = subprocess.run([str(binary), str(tmp)], capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        read = lambda n, dt: torch.frombuffer(bytearray((tmp / n).read_bytes()), dtype=dt)
        o = read("o.bin", torch.int16).view(torch.bfloat16).view(o_shape).float()
        lse = read("lse.bin", torch.float32)
        if pool:
            nk = -(-args["Skv"][0] // pool)
            nq = -(-Sq // pool)  # [B, Hq, nq, nk, pool] (common/block_max_layout.h) as [.., nk, Sq]
            block_max = read("block_max.bin", torch.float32).view(B, Hq, nq, nk, pool)
            block_max = block_max.permute(0, 1, 3, 2, 4).reshape(B, Hq, nk, nq * pool)[..., :Sq]
            pooled = read("pooled.bin", torch.float32).view(B, Hq, -(-Sq // pool), nk)
    assert splits == 1 or "fwd_combine_source" in info  # (the combine kernel merged them)
    return (o, lse, block_max, pooled) if pool else (o, lse)


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-12)).item()


def _bf16(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(torch.bfloat16)


def _dtypes(tensors):
    return [str(t.dtype).replace("torch.", "") for t in tensors]


# ---- the sm90 forward (GPU-tested): the emulator's model of TMA and wgmma ----------------

_DENSE = {"plain": lambda: ae.compile(), "causal": lambda: ae.compile(mask_mod=mods.causal),
          "alibi": lambda: ae.compile(mods.alibi(mods.alibi_slopes(2)), mods.causal)}


@pytest.mark.parametrize("case", [("plain", 128, "1", "sm90"), ("causal", 64, "1", "sm90"),
                                  ("alibi", 128, "1", "sm90"), ("plain", 64, "2", "sm90"),
                                  ("plain", 128, "1", "sm80"), ("causal", 64, "1", "sm80"),
                                  ("alibi", 64, "2", "sm80")],
                         ids=lambda c: "-".join(map(str, c)))
def test_emulated_forward_matches_the_reference(case, monkeypatch):
    """The sm90 forward and the sm80 one (both GPU-tested): the stand-ins' model of TMA,
    wgmma, ldmatrix, mma.sync and cp.async against the reference."""
    name, d, splits, family = case
    monkeypatch.setenv("AE_KV_SPLITS", splits)
    attn = _DENSE[name]()
    B, H, Sq, Skv = 1, 2, 130, 200 if splits == "1" else 640
    q, k, v = _bf16(B, H, Sq, d, seed=0), _bf16(B, H, Skv, d, seed=1), _bf16(B, H, Skv, d, seed=2)
    info = _fwd_source(attn.variant, d, d, True, _dtypes(attn.buffers), family=family,
                                      q_len=Sq if splits == "1" else 1000)
    assert info["describe"].startswith("fwd90" if family == "sm90" else "fwd sm_"), info["describe"]
    out, lse = emulate(info, q, k, v, list(attn.buffers), o_shape=(B, H, Sq, d),
                       lse_numel=B * H * Sq)
    ref, ref_lse = attn(q.double(), k.double(), v.double(), return_lse=True)
    assert _rel(out, ref) < 1e-2
    assert (lse.view(B, H, Sq).double() - ref_lse).abs().max() < 1e-2


# ---- sparse decode (seer.BlockSparseAttention.with_kvcache: a block tensor of one row) -----

@pytest.mark.parametrize("family", ["sm90", "sm80"])
def test_emulated_sparse_decode_walks_the_kept_blocks(family, monkeypatch):
    """The decode variant's lookup blocks[b, h // G, 0, kv_idx // 64] after the positions
    rewrite and GQA packing (h // G read as the packed KV head) is a block tensor: its table
    comes from the tensor (a row of blocks, block_q 0), the sm90 forward takes 64-key tiles,
    the keys split in two ranges, NaN in the cache past each length and in blocks not kept
    (never read)."""
    monkeypatch.setenv("AE_KV_SPLITS", "2")
    B, hq, hkv, sq, cap, d, bs = 2, 8, 2, 1, 384, 64, 64
    g, nk = hq // hkv, cap // bs
    lens_t = torch.tensor([300, 130], dtype=torch.int32)
    gen = torch.Generator().manual_seed(4)
    blocks = torch.rand(B, hkv, nk, generator=gen) < 0.5
    blocks[1, 0] = False  # a KV head with nothing kept: its query heads give 0
    kv, vv, q = _bf16(B, cap, hkv, d, seed=0), _bf16(B, cap, hkv, d, seed=1), _bf16(B, sq, hq, d, seed=2)
    sparse = ae.seer.BlockSparseAttention(block_size=bs)
    ref = sparse.with_kvcache(q.double(), kv.double(), vv.double(), lens_t, blocks)
    unread = (torch.arange(cap)[None, None, :] >= lens_t[:, None, None]) | \
        ~blocks.repeat_interleave(bs, -1)  # [B, hkv, cap]
    kv, vv = kv.clone(), vv.clone()
    kv.transpose(1, 2)[unread] = float("nan")
    vv.transpose(1, 2)[unread] = float("nan")
    attn, slot = sparse._variant(True, g, decode=True)
    variant = _C.build_variant(gqa_packed(with_positions(attn._ref.trace_json, sq), g, sq))
    assert variant.block_tensor is not None and variant.block_tensor["block_q"] == 0
    buffers = list(attn.buffers)
    buffers[slot] = blocks.unsqueeze(2)
    buffers.append(lens_t.long())
    info = _fwd_source(variant, d, d, True, _dtypes(buffers), family=family, q_len=g * sq,
                       kv_lengths=True)
    assert "block_state_blocks_source" in info and " split" in info["describe"], info["plan"]
    if family == "sm90":
        assert " 128x64 " in info["describe"], info["describe"]
    qp = q.transpose(1, 2).reshape(B, hkv, g * sq, d).contiguous()
    layout = {"kv_lens": lens_t, "grid": (B, hkv, g * sq), "k_base": kv, "v_base": vv}
    out, _ = emulate(info, qp, kv.transpose(1, 2), vv.transpose(1, 2), buffers,
                     o_shape=(B, hkv, g * sq, d), lse_numel=B * hkv * g * sq, layout=layout)
    got = out.view(B, hkv, g, sq, d).permute(0, 3, 1, 2, 4).reshape(B, sq, hq, d)
    assert torch.isfinite(got).all()
    assert _rel(got, ref) < 1e-2


# ---- MLA decode (sm90/mla_decode.h) -------------------------------------------------------

D_LATENT, D_V = 576, 512


def _cache_case(name, hq, hkv, sq, lens, cap, page, d, dv, seed=0):
    """with_kvcache's call as the kernel sees it (q GQA-packed [B, hkv, g * sq, d], the cache
    [B, hkv, cap, d] or pages, NaN past each length; dv < d: V is K's first dv columns, MLA's
    latent cache), and the float64 reference."""
    attn = {"plain": lambda: ae.compile(), "causal": lambda: ae.compile(mask_mod=mods.causal),
            "alibi": lambda: ae.compile(mods.alibi(mods.alibi_slopes(hq)), mods.causal),
            "softcap": lambda: ae.compile(mods.softcap(5.0), mods.sliding_window(100)),
            "sigmoid_none": lambda: ae.compile(mods.sigmoid(-2.0), normalize="none")}[name]()
    B, g = len(lens), hq // hkv
    lens_t = torch.tensor(lens, dtype=torch.int32)
    kv = _bf16(B, cap, hkv, d, seed=seed)
    vv = kv[..., :dv] if dv < d else _bf16(B, cap, hkv, dv, seed=seed + 3)
    past = torch.arange(cap)[None, :] >= lens_t[:, None]
    kv[past] = float("nan")
    if dv == d:
        vv[past] = float("nan")
    q = _bf16(B, sq, hq, d, seed=seed + 1)
    kz = kv.double().masked_fill(past[:, :, None, None], 0.0)
    vz = kz[..., :dv] if dv < d else vv.double().masked_fill(past[:, :, None, None], 0.0)
    if attn.normalize == "none":
        ref, ref_lse = attn.with_kvcache(q.double(), kz, vz, lens_t), None
    else:
        ref, ref_lse = attn.with_kvcache(q.double(), kz, vz, lens_t, return_lse=True)
    trace = with_positions(attn._ref.trace_json, sq)
    pack = pack_shape(hq, hkv, sq, d)  # as inference._run packs (or not: more than 16 queries)
    variant = _C.build_variant(gqa_packed(trace, g, sq) if pack else trace)
    buffers = list(attn.buffers) + [lens_t.long()]
    if pack:
        qp = q.transpose(1, 2).reshape(B, hkv, g * sq, d).contiguous()
        layout = {"kv_lens": lens_t, "grid": (B, hkv, g * sq)}
    else:
        qp = q.transpose(1, 2).contiguous()
        layout = {"kv_lens": lens_t, "grid": (B, hq, sq)}
    if page:
        per = cap // page
        perm = torch.randperm(B * per, generator=torch.Generator().manual_seed(seed + 2))
        layout["table"] = perm.view(B, per).to(torch.int32)
        layout["skv"] = per * page
        pools = []
        for x, w in ((kv, d), (vv, dv)):
            pool = torch.full((B * per + 1, page, hkv, x.shape[-1]), float("nan")).to(torch.bfloat16)
            pool[perm] = x.reshape(B * per, page, hkv, x.shape[-1])
            pools.append(pool)
        layout["k_base"], layout["v_base"] = pools
        k, v = pools[0].transpose(1, 2), pools[1].transpose(1, 2)  # [pages, hkv, page, d]
        if dv < d:
            v = k[..., :dv]
    else:
        layout["k_base"], layout["v_base"] = kv, vv.contiguous()
        k = kv.transpose(1, 2)
        v = k[..., :dv] if dv < d else layout["v_base"].transpose(1, 2)
    return attn, variant, buffers, qp, k, v, layout, ref, ref_lse


_MLA_CASES = [("plain", 16, 1, [1, 70, 200], 256, 0, "1"), ("causal", 8, 4, [4, 130], 192, 0, "1"),
              ("alibi", 16, 2, [65, 190], 192, 64, "1"), ("plain", 16, 1, [300], 320, 64, "2"),
              ("softcap", 8, 2, [150, 40], 192, 16, "2"), ("plain", 128, 1, [90], 128, 0, "1"),
              ("sigmoid_none", 16, 1, [100, 7], 128, 0, "1"),
              ("causal", 4, 20, [30, 90], 128, 0, "1")]  # 20 queries: not packed (group 4)


@pytest.mark.parametrize("case", _MLA_CASES, ids=lambda c: "-".join(map(str, c[:3] + c[4:])))
def test_emulated_mla_decode_matches_the_reference(case, monkeypatch):
    name, hq, sq, lens, cap, page, splits = case
    monkeypatch.setenv("AE_KV_SPLITS", splits)
    attn, variant, buffers, qp, k, v, layout, ref, ref_lse = _cache_case(
        name, hq, 1, sq, lens, cap, page, D_LATENT, D_V)
    info = _fwd_source(variant, D_LATENT, D_V, True, _dtypes(buffers), q_len=hq * sq,
                                 kv_lengths=True, page_size=page, v_in_k=True, device="h200")
    assert " mla" in info["describe"], info["describe"]
    _check_cache_call(info, qp, k, v, buffers, layout, ref, ref_lse, hq, sq, v_in_k=True)


def _check_cache_call(info, qp, k, v, buffers, layout, ref, ref_lse, hq, sq, v_in_k=False):
    B, heads, rows = layout["grid"]
    out, lse = emulate(info, qp, k, v, buffers, o_shape=(B, heads, rows, v.shape[-1]),
                       lse_numel=B * heads * rows, layout=layout, v_in_k=v_in_k)
    out = out.view(B, hq, sq, v.shape[-1]).transpose(1, 2)  # row g * sq + s: head g, query s
    assert torch.isfinite(out).all()
    assert _rel(out, ref) < 1e-2
    if ref_lse is not None:
        assert (lse.view(B, hq, sq).double() - ref_lse).abs().max() < 1e-2


# ---- the sm90 forward on a KV cache: per-batch lengths, pages (GPU-tested) ---------------

@pytest.mark.parametrize("case", [("causal", 4, 0, "1"), ("alibi", 1, 16, "2"), ("plain", 2, 64, "1")],
                         ids=lambda c: "-".join(map(str, c)))
def test_emulated_sm90_forward_on_a_cache(case, monkeypatch):
    name, sq, page, splits = case
    monkeypatch.setenv("AE_KV_SPLITS", splits)
    hq, hkv, d = 8, 2, 64
    attn, variant, buffers, qp, k, v, layout, ref, ref_lse = _cache_case(
        name, hq, hkv, sq, [sq, 70, 150], 192, page, d, d)
    info = _fwd_source(variant, d, d, True, _dtypes(buffers), q_len=4 * sq,
                                 kv_lengths=True, page_size=page, family="sm90")
    assert info["describe"].startswith("fwd90") and (" page" in info["describe"]) == bool(page)
    _check_cache_call(info, qp, k, v, buffers, layout, ref, ref_lse, hq, sq)


# ---- the sm80 family on a KV cache: the prefill forward and the decode template (GPU-tested)
# on per-batch lengths, then on pages (PagedLayout's cp.async rows: since GPU-tested) ----------

@pytest.mark.parametrize("case", [("plain", "fwd", 0, 4, "1"), ("causal", "decode", 0, 1, "2"),
                                  ("causal", "fwd", 16, 4, "1"), ("alibi", "fwd", 64, 1, "2"),
                                  ("plain", "decode", 64, 1, "1"), ("softcap", "decode", 24, 2, "2"),
                                  ("alibi", "decode", 8, 4, "1")],
                         ids=lambda c: "-".join(map(str, c)))
def test_emulated_sm80_forward_on_a_cache(case, monkeypatch):
    name, kind, page, sq, splits = case
    monkeypatch.setenv("AE_KV_SPLITS", splits)
    if kind == "decode":
        monkeypatch.setenv("AE_DECODE", "1")
    hq, hkv, d = 8, 2, 64
    attn, variant, buffers, qp, k, v, layout, ref, ref_lse = _cache_case(
        name, hq, hkv, sq, [sq, 70, 150], 192, page, d, d)
    info = _fwd_source(variant, d, d, True, _dtypes(buffers), q_len=4 * sq,
                                 kv_lengths=True, page_size=page, family="sm80")
    assert (" dec" in info["describe"]) == (kind == "decode"), info["describe"]
    assert (f" page{page}" in info["describe"]) == bool(page), info["describe"]
    _check_cache_call(info, qp, k, v, buffers, layout, ref, ref_lse, hq, sq)


# ---- packed sequences (VarlenLayout; the AE_VARLEN=kernel route, since GPU-tested) ---------

def _varlen_inputs(name, lq=(5, 70, 130), lk=(20, 70, 200)):
    """Packed sequences (by default 5, 70 and 130 queries against 20, 70 and 200 keys; 2 query
    heads of one KV head, D 64) as bf16 [T, H, D] tensors, their int32 cumulative lengths, the
    compiled variant and its positions rewrite with the varlen op's two captured lengths."""
    attn = _DENSE[name]()
    lq, lk = list(lq), list(lk)
    cq = torch.tensor([0] + list(torch.tensor(lq).cumsum(0)), dtype=torch.int32)
    ck = torch.tensor([0] + list(torch.tensor(lk).cumsum(0)), dtype=torch.int32)
    tq, tk = sum(lq), sum(lk)
    q, k, v = _bf16(tq, 2, 64, seed=0), _bf16(tk, 1, 64, seed=1), _bf16(tk, 1, 64, seed=2)
    variant = _C.build_variant(with_positions(attn._ref.trace_json))
    lq_t, lk_t = torch.tensor(lq), torch.tensor(lk)
    buffers = list(attn.buffers) + [lk_t - lq_t, lk_t]
    layout = {"grid": (len(lq), 2, max(lq)), "skv": max(lk), "kv_lens": lk_t, "cu_q": cq,
              "cu_k": ck, "q_total": tq, "q_base": q, "k_base": k, "v_base": v}
    return attn, variant, buffers, q, k, v, cq, ck, layout


def _as_one(x):
    return x.transpose(0, 1).unsqueeze(0)  # [T, H, D] -> [1, H, T, D]


@pytest.mark.parametrize("family", ["sm90", "sm80"])
@pytest.mark.parametrize("name", ["plain", "causal", "alibi"])
def test_emulated_varlen_forward_matches_the_reference(name, family):
    attn, variant, buffers, q, k, v, cq, ck, layout = _varlen_inputs(name)
    tq, hq, d = q.shape
    ref, ref_lse = attn.varlen(q.double(), k.double(), v.double(), cq, ck, return_lse=True)
    info = _fwd_source(variant, d, d, True, _dtypes(buffers), varlen=True, family=family)
    assert info["describe"].endswith(" varlen"), info["describe"]
    layout["o_stride"] = [tq * hq * d, d, hq * d]
    out, lse = emulate(info, _as_one(q), _as_one(k), _as_one(v), buffers, o_shape=(tq, hq, d),
                       lse_numel=hq * tq, layout=layout)
    assert _rel(out, ref) < 1e-2
    assert (lse.view(hq, tq).double() - ref_lse).abs().max() < 1e-2


def _tile_code(keep):
    """A tile's block-state code from its kept scores (none: no scores, empty)."""
    return 0 if not keep.numel() or not keep.any() else 2 if keep.all() else 1


@pytest.mark.parametrize("half", [0, 64, -32])
def test_block_state_pass_stays_inside_each_packed_sequence(half):
    """common/block_state.h's mask pass on packed sequences of unequal lengths
    (tests/emu/block_state_main.cc: a causal mask that counts its calls): the table is exactly
    the tiles' classification, every tile past a sequence's own end empty, with half > 0
    (half_m) the codes of each half of the tile's rows beside it (common/block_walk.h
    kBlockHalves), with half < 0 (half_n = -half) those of each half of its keys, and the
    mask is evaluated only at the sequences' own scores (a tile past both ends once looped over
    the product of two negative counts: 5.7 ms a call on the H200 at 16 random lengths in 16k
    tokens, against 24 us at equal ones)."""
    bm, bn, lens = 128, 64, [(5, 20), (70, 70), (300, 400), (0, 0), (129, 129)]
    binary = _build([], "block_state_main.cc", 0, ("sm80", "smem")).result()
    run = subprocess.run([str(binary), str(bm), str(bn), str(half),
                          *(str(x) for pair in lens for x in pair)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    calls, table = run.stdout.splitlines()
    assert calls == f"calls {sum(q * k for q, k in lens)}"
    nq, nk = -(-max(q for q, _ in lens) // bm), -(-max(k for _, k in lens) // bn)
    want = []
    for q_len, k_len in lens:
        keep = torch.arange(k_len)[None, :] <= torch.arange(q_len)[:, None] + (k_len - q_len)
        for mb in range(nq):
            for kb in range(nk):
                t = keep[mb * bm:(mb + 1) * bm, kb * bn:(kb + 1) * bn]
                code = _tile_code(t)
                if half > 0:
                    code |= 0x40 | _tile_code(t[:half]) << 2 | _tile_code(t[half:]) << 4
                elif half < 0:
                    code |= 0x40 | _tile_code(t[:, :-half]) << 2 | _tile_code(t[:, -half:]) << 4
                want.append(code)
    assert list(map(int, table.split())) == want


@pytest.mark.parametrize("splits", ["2", "1000"])
@pytest.mark.parametrize("name", ["plain", "causal"])
def test_emulated_varlen_decode_with_a_split(name, splits, monkeypatch):
    """A query per sequence (one sequence empty, one with a single key) with the keys split
    into ranges (1000: one per block, so that short sequences have empty ranges), merged by
    the combine kernel on the packed layout."""
    monkeypatch.setenv("AE_KV_SPLITS", splits)
    attn, variant, buffers, q, k, v, cq, ck, layout = _varlen_inputs(
        name, lq=(1, 1, 1, 0, 1), lk=(1, 17, 300, 0, 700))
    tq, hq, d = q.shape
    ref, ref_lse = attn.varlen(q.double(), k.double(), v.double(), cq, ck, return_lse=True)
    info = _fwd_source(variant, d, d, True, _dtypes(buffers), varlen=True, family="sm90", q_len=1)
    assert " split" in info["describe"] and "fwd_combine_source" in info, info["describe"]
    layout["o_stride"] = [tq * hq * d, d, hq * d]
    out, lse = emulate(info, _as_one(q), _as_one(k), _as_one(v), buffers, o_shape=(tq, hq, d),
                       lse_numel=hq * tq, layout=layout)
    assert _rel(out, ref) < 1e-2
    assert (lse.view(hq, tq).double() - ref_lse).abs().max() < 1e-2


# ---- block sparsity as data (csrc/ir/block_mask.h: the table from the block tensor and the
# rest's table; GPU-tested) -------------------------------------------------------------------

@pytest.mark.parametrize("case", [("bool", "causal", "sm90", 64), ("bool", None, "sm80", 64),
                                  ("codes", "causal", "sm90", 64), ("codes3", "causal", "sm80", 64),
                                  ("bool", "causal", "sm90", 128), ("codes", "causal", "sm90", 128)],
                         ids=lambda c: "-".join(map(str, c)))
def test_emulated_block_tensor_forward_matches_the_reference(case, monkeypatch):
    """Random blocks of 64 (a third kept, an empty query block row) under causal or alone, as
    seer.BlockSparseAttention (bool) or a FlexAttention block mask (codes) write the lookup,
    and codes written by hand with 3s among them (keeping nothing); the plan builds the table
    from the tensor beside the causal rest's own table (one for every head: other flags than
    the final table's), and the forward walks it. At D128 the sm90 forward runs without the
    overlap, 64 keys a tile: each warpgroup skips the blocks its own 64 rows keep nothing of
    (the tables' halves)."""
    form, rest, family, d = case
    monkeypatch.setenv("AE_KV_SPLITS", "1")
    B, H, S, bs = 1, 2, 320, 64
    n = -(-S // bs)
    gen = torch.Generator().manual_seed(3)
    sparse = None
    if form == "bool":
        blocks = torch.rand(B, H, n, n, generator=gen) < 0.35
        blocks[:, :, 2] = False  # a query block with nothing kept: its rows give 0
        sparse = ae.seer.BlockSparseAttention(mask_mod=mods.causal if rest else None, block_size=bs)
        attn, buffers = sparse._attn, [blocks]
    elif form == "codes":
        from attention_engine._block_mask import block_mask_to_mask_mod
        codes = torch.randint(0, 3, (B, H, n, n), generator=gen, dtype=torch.int8)
        nums = (codes == 1).sum(-1).int()
        idx = torch.sort((codes != 1).to(torch.int8), dim=-1, stable=True).indices.int()
        fnums = (codes == 2).sum(-1).int()
        fidx = torch.sort((codes != 2).to(torch.int8), dim=-1, stable=True).indices.int()
        bm = torch.nn.attention.flex_attention.BlockMask.from_kv_blocks(
            nums, idx, fnums, fidx, BLOCK_SIZE=bs, mask_mod=mods.causal, seq_lengths=(S, S))
        attn = ae.compile(mask_mod=block_mask_to_mask_mod(bm, "cpu"))
        buffers = list(attn.buffers)
    else:
        codes = torch.randint(0, 4, (B, H, n, n), generator=gen, dtype=torch.int8)

        def coded(b, h, q_idx, kv_idx):
            c = codes[b, h, q_idx // bs, kv_idx // bs]
            return (c == 2) | ((c == 1) & (q_idx >= kv_idx))
        attn = ae.compile(mask_mod=coded)
        buffers = list(attn.buffers)
    assert attn.variant.block_tensor is not None
    q, k, v = _bf16(B, H, S, d, seed=0), _bf16(B, H, S, d, seed=1), _bf16(B, H, S, d, seed=2)
    info = _fwd_source(attn.variant, d, d, True, _dtypes(buffers), family=family, q_len=S)
    assert "block_state_blocks_source" in info, info["plan"]
    if family == "sm90" and d == 128:
        assert " 128x64 " in info["describe"] and " ov" not in info["describe"], info["describe"]
    assert ("block_state_source" in info) == bool(rest), info["plan"]
    layout = {"rest_b": 0, "rest_h": 0} if rest else {}  # causal: one table
    out, lse = emulate(info, q, k, v, buffers, o_shape=(B, H, S, d), lse_numel=B * H * S,
                       layout=layout)
    q64, k64, v64 = q.double(), k.double(), v.double()
    ref = sparse(q64, k64, v64, blocks) if sparse else attn(q64, k64, v64)
    assert _rel(out, ref) < 1e-2


# ---- the gate-training forward (seer.attention_with_pooling): block maxima per row --------

def _pool_rows(probs, block):
    """[B, H, nk, Sq] row probabilities per key block -> the map [B, H, nq, nk], normalized."""
    B, H, nk, Sq = probs.shape
    nq = -(-Sq // block)
    pooled = torch.nn.functional.pad(probs, (0, nq * block - Sq)).view(B, H, nk, nq, block).amax(-1)
    pooled = pooled.transpose(2, 3)
    return pooled / pooled.sum(-1, keepdim=True).clamp_min(1e-30)


@pytest.mark.parametrize("case", [("causal", "sm90", 64, 64, 1), ("alibi", "sm90", 128, 64, 2),
                                  ("plain", "sm90", 128, 256, 1), ("causal", "sm80", 64, 32, 1),
                                  ("alibi", "sm80", 128, 128, 2), ("plain", "sm90", 128, 64, 1)],
                         ids=lambda c: "-".join(map(str, c)))
def test_emulated_gate_training_forward_writes_each_rows_block_maxima(case, monkeypatch):
    """The forward planned with pooled blocks (blocks within a tile, and blocks of several
    tiles, folded by a max into the -inf the host filled) writes each query row's largest score
    per key block in log2 units: exp2(it - the row's log2 LSE) is then the row's largest
    probability in the block, against the reference's probabilities (P V with V = I), and
    pooled over rows (the plan's pool_map step, run after it) it is seer.pooled_attention_map's
    target; the output stays the forward's.
    GQA (2 query heads per KV head) and lengths that are not multiples of the block; keys
    (140) whose last tile reaches past the last block (the harness checks a guard row past the
    maxima: a write there fails the run)."""
    name, family, d, pool, group = case
    monkeypatch.setenv("AE_KV_SPLITS", "1")
    attn = _DENSE[name]() if name != "alibi" else ae.compile(mods.alibi(mods.alibi_slopes(2 * group)),
                                                              mods.causal)
    B, Hkv, Sq, Skv = 1, 2, 200, (300 if pool != 64 else 140) if name == "plain" else 200
    Hq = Hkv * group
    q, k, v = _bf16(B, Hq, Sq, d, seed=0), _bf16(B, Hkv, Skv, d, seed=1), _bf16(B, Hkv, Skv, d, seed=2)
    info = _fwd_source(attn.variant, d, d, True, _dtypes(attn.buffers), family=family, q_len=Sq,
                       pool_block=pool)
    assert f" pool{pool}" in info["describe"] and " split" not in info["describe"], info["describe"]
    assert "pool_map_source" in info, info["plan"]
    out, lse, block_max, pooled = emulate(info, q, k, v, list(attn.buffers), o_shape=(B, Hq, Sq, d),
                                          lse_numel=B * Hq * Sq, pool=pool)
    q64, k64, v64 = q.double(), k.double(), v.double()
    ref, ref_lse = attn(q64, k64, v64, return_lse=True)
    assert _rel(out, ref) < 1e-2
    lse2 = lse.view(B, Hq, Sq).double() * math.log2(math.e)
    probs = torch.exp2(block_max.double() - lse2.unsqueeze(2))  # [B, Hq, nk, Sq]
    eye = torch.eye(Skv, dtype=torch.float64).expand(B, Hkv, Skv, Skv)
    weights = attn.reference(q64, k64, eye)  # [B, Hq, Sq, Skv]
    nk = -(-Skv // pool)
    padded = torch.nn.functional.pad(weights, (0, nk * pool - Skv))
    row_max = padded.view(B, Hq, Sq, nk, pool).amax(-1).transpose(2, 3)
    assert (probs - row_max).abs().max() < 2e-3, (probs - row_max).abs().max()
    # blocks a causal row keeps nothing of stay at the host's -inf
    if name != "plain":
        first_key = torch.arange(nk) * pool
        unreached = first_key[:, None] > torch.arange(Sq)[None, :]
        assert torch.isneginf(block_max[0, 0][unreached]).all()
    target = ae.seer.pooled_attention_map(attn, q64, k64, pool).double()
    assert (_pool_rows(probs, pool) - target).abs().max() < 5e-3
    assert (pooled.double() - target).abs().max() < 5e-3  # the pool_map step's


# ---- linear attention: the chunked forward (sm80/linear_fwd.h) and the decode step ---------

def _recurrence(q, k, v, a, state0, scale):
    """S_t = exp(a_t) S_{t-1} + k_t v_t^T, o_t = scale q_t^T S_t, token by token in float64."""
    q, k, v, a = (t.double() for t in (q, k, v, a))
    B, H, T, Dk = q.shape
    S = torch.zeros(B, H, Dk, v.shape[-1], dtype=torch.float64) if state0 is None else state0.double()
    outs = []
    for t in range(T):
        e = a[:, :, t].exp()
        S = (e[..., None, None] if a.dim() == 3 else e[..., :, None]) * S + \
            k[:, :, t, :, None] * v[:, :, t, None, :]
        outs.append(scale * (q[:, :, t, None, :] @ S).squeeze(-2))
    return (torch.stack(outs, 2) if outs else torch.zeros(B, H, 0, v.shape[-1], dtype=torch.float64)), S


def _chunk_map(cu):
    """LinearParams::chunk_map of packed sequences with offsets cu, and the chunks in all."""
    first, seq, t0 = [], [], []
    for i, (s, e) in enumerate(zip(cu, cu[1:])):
        first.append(len(seq))
        for t in range(s, e, 64):
            seq.append(i)
            t0.append(t)
    return torch.tensor(first + [len(seq)] + seq + t0, dtype=torch.int32), len(seq)


def _linear_emulate(steps, q, k, v, a, scale, state=None, want_state=False, dout=None, dstate=None,
                    cu=None):
    """Runs the plan's launches (linear_kernel_sources) on q, k, v (bf16) and a: (o float,
    the state after: the step's, updated, or the forward's final one); with dout (the
    backward's plan): (dq, dk, dv, da, dstate0) instead."""
    binary = _build([st["source"] for st in steps], "linear_main.cc", 0, ("sm80", "smem")).result()
    B, H, T, Dk = q.shape
    args = {"B": [B], "H": [H], "T": [T], "Dk": [Dk], "Dv": [v.shape[-1]],
            "per_channel": [int(a.dim() == 4)], "n_chunks": [steps[0]["n_chunks"]], "scale": [scale]}
    for st in steps:
        args[f"grid_{st['step']}"] = st["grid"]
        args[f"threads_{st['step']}"] = [st["threads"]]
        args[f"smem_{st['step']}"] = [st["smem"]]
    if want_state:
        args["want_state"] = [1]
    if state is not None and steps[0]["step"] != "linear_step":
        args["state0"] = [1]
    if dout is not None:
        args["backward"] = [1]
    if cu is not None:
        args["n_seqs"] = [len(cu) - 1]
    if dstate is not None:
        args["dstate"] = [1]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for name, t in (("q", q), ("k", k), ("v", v)):
            (tmp / f"{name}.bin").write_bytes(_bits(t))
        (tmp / "a.bin").write_bytes(a.float().contiguous().numpy().tobytes())
        if state is not None:
            (tmp / "state.bin").write_bytes(state.float().contiguous().numpy().tobytes())
        if dout is not None:
            (tmp / "dout.bin").write_bytes(_bits(dout))
        if dstate is not None:
            (tmp / "dstate.bin").write_bytes(dstate.float().contiguous().numpy().tobytes())
        if cu is not None:
            (tmp / "cu.bin").write_bytes(torch.tensor(cu, dtype=torch.int32).numpy().tobytes())
            (tmp / "map.bin").write_bytes(_chunk_map(cu)[0].numpy().tobytes())
        (tmp / "args.txt").write_text("\n".join(f"{k_} {' '.join(map(str, v_))}" for k_, v_ in args.items()))
        run = subprocess.run([str(binary), str(tmp)], capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        read = lambda n, dt: torch.frombuffer(bytearray((tmp / n).read_bytes()), dtype=dt)
        o = read("o.bin", torch.int16).view(torch.bfloat16).view(B, H, T, v.shape[-1]).float()
        after = read("state.bin", torch.float32).view(-1, H, Dk, v.shape[-1])
        if dout is not None:
            half = lambda n, shape: read(n, torch.int16).view(torch.bfloat16).view(shape).float()
            return (half("dq.bin", q.shape), half("dk.bin", k.shape), half("dv.bin", v.shape),
                    read("da.bin", torch.float32).view(a.shape),
                    read("dstate0.bin", torch.float32).view(-1, H, Dk, v.shape[-1]))
    return o, after


@pytest.mark.parametrize("case", [(64, 64, 130, True, "constant"), (128, 64, 64, False, "gates"),
                                  (64, 128, 200, True, "strong"), (128, 128, 1, False, "gates"),
                                  (64, 64, 150, True, "gla"), (128, 128, 70, False, "gla_strong"),
                                  (64, 128, 200, True, "strong", 64), (128, 64, 150, True, "gla", 32),
                                  (128, 128, 150, True, "gla_mid")],
                         ids=lambda c: "-".join(map(str, c)))
def test_emulated_linear_forward_matches_the_recurrence(case):
    """The chunked forward's two passes (the state at each chunk's start stored in bf16, the
    output per chunk) against the token-by-token recurrence in float64: a tail chunk, an initial
    state, data-dependent gates with one at 0 (log-decay -inf: the state forgets everything),
    strong decays (exp(-20) a token), one token; GLA's gates per key channel (one at 0, strong
    ones: the blocks' factors relative to a block's first token stay finite; middling ones,
    whose diagonal blocks go on the tensor cores with factors up to e^37). A sixth field:
    the state pass's value columns per CTA, where not the planner's (32 for scalar decays, 64
    per channel)."""
    Dk, Dv, T, with_state, decays, *cols = case
    B, H = 2, 2
    q, k, v = _bf16(B, H, T, Dk, seed=0), _bf16(B, H, T, Dk, seed=1), _bf16(B, H, T, Dv, seed=2)
    gen = torch.Generator().manual_seed(3)
    if decays == "constant":
        a = torch.full((B, H, T), math.log(1 - 1 / 32))
    elif decays == "strong":
        a = -20 * torch.rand(B, H, T, generator=gen)
    elif decays == "gla":
        a = torch.nn.functional.logsigmoid(torch.randn(B, H, T, Dk, generator=gen)) / 4
        a[1, 0, T // 3, 5] = -math.inf
    elif decays == "gla_strong":
        a = -20 * torch.rand(B, H, T, Dk, generator=gen) ** 4
    elif decays == "gla_mid":  # (16-token blocks spanning up to ~37: the diagonal on the tensor cores)
        a = -2.5 * torch.rand(B, H, T, Dk, generator=gen)
    else:
        a = torch.nn.functional.logsigmoid(torch.randn(B, H, T, generator=gen) + 2)
        a[0, 1, T // 2] = -math.inf
    state0 = torch.randn(B, H, Dk, Dv, generator=gen) if with_state else None
    scale = Dk ** -0.5
    steps = _C.linear_kernel_sources(False, Dk, Dv, batch=B, heads=H, t_len=T,
                                     per_channel=a.dim() == 4, state_cols=cols[0] if cols else 0)
    assert [st["step"] for st in steps] == ["linear_state", "linear_out"]
    if cols:
        assert f" cols{cols[0]}" in steps[0]["describe"]
        assert steps[0]["grid"][0] == (Dk // 64) * (Dv // cols[0])
    o, final = _linear_emulate(steps, q, k, v, a, scale, state0, want_state=True)
    ref, ref_state = _recurrence(q, k, v, a, state0, scale)
    assert _rel(o, ref) < 2e-2, _rel(o, ref)
    assert _rel(final, ref_state) < 1e-2, _rel(final, ref_state)


@pytest.mark.parametrize("case", [(64, 64, 130, True, "constant"), (128, 64, 64, False, "gates"),
                                  (64, 128, 200, True, "strong"), (64, 64, 150, True, "gla"),
                                  (128, 128, 70, False, "gla_strong"), (128, 64, 64, True, "gla_strong"),
                                  (64, 128, 1, True, "gla"), (64, 64, 130, True, "constant", 64),
                                  (128, 128, 70, False, "gla_strong", 32), (64, 64, 130, True, "gla_mid"),
                                  (64, 64, 130, True, "gla_steady")],
                         ids=lambda c: "-".join(map(str, c)))
def test_emulated_linear_backward_matches_autograd(case):
    """The chunked backward (the state pass again, the reverse pass over the state's gradient,
    the gradients per chunk) against autograd of the float64 recurrence on the same bf16
    inputs: dq, dk, dv, the log-decays' and the initial state's gradients, with a final
    state's gradient; a gate at 0 (its log-decay's gradient 0: clamped). GLA's gates per key
    channel (the log-decays' gradient per channel): a tail chunk, gates at 0 (a channel's, and
    a whole token's), strong decays (exp(-20) a token), one token. A sixth field: the state
    passes' value columns per CTA."""
    Dk, Dv, T, with_state, decays, *cols = case
    B, H = 1, 2
    q, k, v = _bf16(B, H, T, Dk, seed=10), _bf16(B, H, T, Dk, seed=11), _bf16(B, H, T, Dv, seed=12)
    gen = torch.Generator().manual_seed(13)
    if decays == "constant":
        a = torch.full((B, H, T), math.log(1 - 1 / 32))
    elif decays == "strong":
        a = -5 * torch.rand(B, H, T, generator=gen)
    elif decays == "gla":  # (weak: the chunks' start states matter)
        a = torch.nn.functional.logsigmoid(torch.randn(B, H, T, Dk, generator=gen) + 4) / 4
        a[0, 1, T // 3, 5] = -math.inf
        a[0, 0, T // 2] = -math.inf
    elif decays == "gla_strong":
        a = -20 * torch.rand(B, H, T, Dk, generator=gen) ** 4
    elif decays == "gla_mid":  # (16-token blocks spanning up to ~37: the diagonal on the tensor cores)
        a = -2.5 * torch.rand(B, H, T, Dk, generator=gen)
    elif decays == "gla_steady":  # (da small next to q.dq and k.dk, which cancel in it: their
        # own block's pairs rounded to bf16 on the tensor cores left 5% of it, fp32 0.4%)
        a = torch.full((B, H, T, Dk), -1.5)
    else:
        a = torch.nn.functional.logsigmoid(torch.randn(B, H, T, generator=gen) + 2)
        a[0, 1, T // 2] = -math.inf
    state0 = torch.randn(B, H, Dk, Dv, generator=gen) if with_state else None
    dout = _bf16(B, H, T, Dv, seed=14)
    dstate = torch.randn(B, H, Dk, Dv, generator=gen)
    scale = Dk ** -0.5
    steps = _C.linear_kernel_sources(False, Dk, Dv, batch=B, heads=H, t_len=T, backward=True,
                                     per_channel=a.dim() == 4, state_cols=cols[0] if cols else 0)
    assert [st["step"] for st in steps] == ["linear_state", "linear_dstate", "linear_grads"]
    got = _linear_emulate(steps, q, k, v, a, scale, state0, dout=dout, dstate=dstate)
    leaves = [t.double().requires_grad_() for t in (q, k, v, a.clamp_min(-1e4))]
    s0 = None if state0 is None else state0.double().requires_grad_()
    o, S = _recurrence(*leaves, s0, scale)
    want = list(torch.autograd.grad([o, S], leaves + ([s0] if s0 is not None else []),
                                    [dout.double(), dstate.double()]))
    want[3] = torch.where(a.isneginf(), 0.0, want[3])  # a gate at 0: clamped, no gradient
    names = ["dq", "dk", "dv", "da"] + (["dstate0"] if s0 is not None else [])
    for name, g_, w in zip(names, got, want):
        assert _rel(g_, w) < (1e-2 if decays == "gla_steady" and name == "da" else 3e-2), \
            (name, _rel(g_, w))
    if s0 is None:  # no initial state: its gradient is still dS_0
        assert torch.isfinite(got[4]).all()


@pytest.mark.parametrize("per_channel", [False, True], ids=["scalar", "per_channel"])
def test_emulated_linear_packed_sequences(per_channel):
    """Packed sequences (cu_seqlens; an empty one, one shorter than a chunk, chunks ending
    inside another sequence's): each sequence's state restarts from its own initial state,
    forward and backward (scalar decays and GLA's), against the float64 recurrence per
    sequence."""
    H, Dk, Dv = 2, 64, 64
    cu = [0, 70, 70, 100, 230]
    T = cu[-1]
    q, k, v = _bf16(1, H, T, Dk, seed=20), _bf16(1, H, T, Dk, seed=21), _bf16(1, H, T, Dv, seed=22)
    gen = torch.Generator().manual_seed(23)
    a = torch.nn.functional.logsigmoid(torch.randn(1, H, T, *([Dk] if per_channel else []),
                                                   generator=gen) + 1)
    n = len(cu) - 1
    state0 = torch.randn(n, H, Dk, Dv, generator=gen)
    n_chunks = _chunk_map(cu)[1]
    steps = _C.linear_kernel_sources(False, Dk, Dv, batch=1, heads=H, t_len=T,
                                     per_channel=per_channel, n_seqs=n, n_chunks=n_chunks)
    tiles = 1 if per_channel else 2  # the state's 64 x 64 tile, or 64 x 32 tiles for scalar decays
    assert steps[0]["grid"] == [tiles, H, n] and steps[1]["grid"] == [n_chunks, H, 1]
    o, final = _linear_emulate(steps, q, k, v, a, Dk ** -0.5, state0, want_state=True, cu=cu)
    refs = [_recurrence(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], a[:, :, s:e], state0[i:i + 1],
                        Dk ** -0.5) for i, (s, e) in enumerate(zip(cu, cu[1:]))]
    assert _rel(o, torch.cat([r[0] for r in refs], 2)) < 2e-2
    assert _rel(final, torch.cat([r[1] for r in refs], 0)) < 1e-2
    assert torch.equal(final[1], state0[1])  # the empty sequence: its state as it came
    dout = _bf16(1, H, T, Dv, seed=24)
    dstate = torch.randn(n, H, Dk, Dv, generator=gen)
    back = _C.linear_kernel_sources(False, Dk, Dv, batch=1, heads=H, t_len=T, backward=True,
                                    per_channel=per_channel, n_seqs=n, n_chunks=n_chunks)
    got = _linear_emulate(back, q, k, v, a, Dk ** -0.5, state0, dout=dout, dstate=dstate, cu=cu)
    leaves = [t.double().requires_grad_() for t in (q, k, v, a)]
    s0 = state0.double().requires_grad_()
    outs, finals = [], []
    for i, (s, e) in enumerate(zip(cu, cu[1:])):
        o_i, f_i = _recurrence(*(x[:, :, s:e] for x in leaves), s0[i:i + 1], Dk ** -0.5)
        outs.append(o_i)
        finals.append(f_i)
    want = torch.autograd.grad([torch.cat(outs, 2), torch.cat(finals, 0)], leaves + [s0],
                               [dout.double(), dstate.double()])
    for name, g_, w in zip(["dq", "dk", "dv", "da", "dstate0"], got, want):
        assert _rel(g_, w) < 3e-2, (name, _rel(g_, w))


@pytest.mark.parametrize("per_channel", [False, True], ids=["scalar", "per_channel"])
def test_emulated_linear_step_updates_the_state(per_channel):
    """The decode step: the state (fp32) updated in place and o from it, scalar or per-channel
    decays (one of them -inf), head dims that are no multiples of 64 (d_k none of 16: the
    rows past the last 16-row batch)."""
    B, H, Dk, Dv = 2, 3, 100, 80
    q, k, v = _bf16(B, H, 1, Dk, seed=4), _bf16(B, H, 1, Dk, seed=5), _bf16(B, H, 1, Dv, seed=6)
    gen = torch.Generator().manual_seed(7)
    a = torch.nn.functional.logsigmoid(torch.randn(B, H, 1, *([Dk] if per_channel else []), generator=gen))
    a.view(-1)[1] = -math.inf
    state = torch.randn(B, H, Dk, Dv, generator=gen)
    steps = _C.linear_kernel_sources(True, Dk, Dv, batch=B, heads=H, per_channel=per_channel)
    assert [st["step"] for st in steps] == ["linear_step"]
    o, after = _linear_emulate(steps, q, k, v, a, 0.5, state)
    ref, ref_state = _recurrence(q, k, v, a, state, 0.5)
    assert _rel(o, ref) < 1e-2
    assert _rel(after, ref_state) < 1e-5


# ---- other interleavings, and the stand-ins' coverage ------------------------------------

@pytest.mark.parametrize("seed", ["1", "2"])
def test_emulated_linear_under_other_interleavings(seed, monkeypatch):
    """EMU_CHAOS (tests/emu/fibers.h) on linear attention's passes: the state pass's double
    buffers (tiles and decays), the decays' sums in place and the state tile staged between
    barriers, the GLA output pass's V loaded into the state's rows."""
    monkeypatch.setenv("EMU_CHAOS", seed)
    test_emulated_linear_forward_matches_the_recurrence((64, 128, 200, True, "strong"))
    test_emulated_linear_forward_matches_the_recurrence((128, 128, 150, True, "gla_mid"))
    test_emulated_linear_backward_matches_autograd((64, 64, 150, True, "gla"))


@pytest.mark.parametrize("seed", ["1", "2"])
def test_emulated_mla_decode_under_other_interleavings(seed, monkeypatch):
    """EMU_CHAOS (tests/emu/fibers.h): threads yield at random points and sit out a few rounds,
    so the two consumer warpgroups' exchanges run in other orders than round-robin's."""
    monkeypatch.setenv("EMU_CHAOS", seed)
    test_emulated_mla_decode_matches_the_reference(("causal", 8, 4, [4, 130], 192, 0, "1"),
                                                   monkeypatch)
    test_emulated_mla_decode_matches_the_reference(("sigmoid_none", 16, 1, [100, 7], 128, 0, "1"),
                                                   monkeypatch)


def _functions(path):
    text = (ROOT / path).read_text()
    return set(re.findall(r"AE_DEVICE (?:[\w:<>&*]+ )+?(\w+)\(", text))


@pytest.mark.parametrize("header", ["sm90/hopper_ops.h", "sm90/wgmma.h", "nvidia/mma.h"])
def test_stand_ins_declare_every_function_of_the_real_headers(header):
    real = _functions(f"templates/{header}")
    shim = _functions(f"tests/emu/shims/{header}")
    assert real and not real - shim, f"tests/emu/shims/{header} lacks {sorted(real - shim)}"


# ---- the backwards: the sm90 and sm80 backwards (GPU-tested) on dense tensors, then on
# packed sequences (attention_varlen_backward's layout: since GPU-tested) -------------------

def emulate_bwd(info, state_info, q, k, v, o, lse, dout, buffers, *, layout=None):
    """Runs the planned backward (kernel_source's dicts: the main kernel, and the block-state
    pass of a masked variant) on [B, H, S, D] views as the kernels see them; returns dq, dk,
    dv with q's, k's and v's storage shapes."""
    layout = layout or {}
    sm90 = info["describe"].startswith("bwd90")
    bm, bn = map(int, info["describe"].split()[4].split("x"))
    # state_info: the block-state pass's dict, or a list of table sources (a block tensor's:
    # the rest's pass and the tensor's)
    states = state_info if isinstance(state_info, list) else [state_info["source"]] if state_info else []
    sources = [info["source"]] + states
    binary = _build(sources, "nvidia_bwd_main.cc", 4 if sm90 else 0,
                    ("sm90", "smem_raw") if sm90 else ("sm80", "smem")).result()
    B, Hq, Sq = layout.get("grid", (q.shape[0], q.shape[1], q.shape[2]))
    base = lambda name, t: layout.get(name + "_base", t)
    args = {"B": [B], "Hq": [Hq], "Hkv": [k.shape[1]], "Sq": [Sq],
            "Skv": [layout.get("skv", k.shape[2])], "Dqk": [q.shape[3]], "Dv": [v.shape[3]],
            "block_m": [bm], "block_n": [bn], "threads": [info["threads"]], "smem": [info["smem"]],
            "masked": [int(bool(states))], "scale": [1 / math.sqrt(q.shape[3])],
            "nbuf": [len(buffers)], "acc_tiled": [int(sm90)],
            "state_batches": [layout.get("state_batches", 1)],
            "state_heads": [layout.get("state_heads", 1)],
            # the tables' halves of the keys (planner.cc add_block_states: the sm90 backward's
            # two warpgroups of 64 keys, for block tensors' tables: the kernel's " kh")
            "half_n": [layout.get("half_n", 64 if " kh" in info["describe"] else 0)],
            "q_numel": [base("q", q).numel()], "k_numel": [base("k", k).numel()],
            "v_numel": [base("v", v).numel()]}
    for name, t, box in (("q", q, bm), ("k", k, bn), ("v", v, bn), ("o", o, bm)):
        args.update(_tensor_args(name, t, box))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for name, t in (("q", q), ("k", k), ("v", v), ("o", o)):
            (tmp / f"{name}.bin").write_bytes(_bits(base(name, t)))
        (tmp / "do.bin").write_bytes(_bits(layout.get("do_base", dout)))
        (tmp / "lse.bin").write_bytes(lse.float().contiguous().numpy().tobytes())
        for n, t in enumerate(buffers):
            (tmp / f"buf{n}.bin").write_bytes(t.detach().contiguous().view(torch.uint8).numpy().tobytes())
            args[f"buf{n}"] = list(t.shape)
        for name in ("kv_lens", "cu_q", "cu_k"):
            if name in layout:
                (tmp / f"{name}.bin").write_bytes(layout[name].contiguous().numpy().tobytes())
        for key in ("rest_b", "rest_h"):  # a block tensor's rest table: its own flags
            if key in layout:
                args[key] = [int(layout[key])]
        if "cu_q" in layout:
            args["q_total"] = [layout["q_total"]]
            args["kv_lens"] = [layout["kv_lens"].element_size()]
        (tmp / "args.txt").write_text("\n".join(f"{k} {' '.join(map(str, v))}" for k, v in args.items()))
        run = subprocess.run([str(binary), str(tmp)], capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        read = lambda n, like: torch.frombuffer(bytearray((tmp / n).read_bytes()),
                                                dtype=torch.int16).view(torch.bfloat16).view(like.shape).float()
        return read("dq.bin", base("q", q)), read("dk.bin", base("k", k)), read("dv.bin", base("v", v))


@pytest.mark.parametrize("case", [("plain", "sm90"), ("causal", "sm90"), ("plain", "sm80"),
                                  ("causal", "sm80")], ids=lambda c: "-".join(c))
def test_emulated_backward_matches_autograd(case):
    name, family = case
    attn = _DENSE[name]()
    B, H, Sq, Skv, d = 1, 2, 130, 200, 64
    q, k, v = _bf16(B, H, Sq, d, seed=0), _bf16(B, H, Skv, d, seed=1), _bf16(B, H, Skv, d, seed=2)
    dout = _bf16(B, H, Sq, d, seed=3)
    q64, k64, v64 = (x.double().requires_grad_() for x in (q, k, v))
    o, lse = attn(q64, k64, v64, return_lse=True)
    want = torch.autograd.grad(o, (q64, k64, v64), dout.double())
    dtypes = _dtypes(attn.buffers)
    info = attn.variant.kernel_source("bwd", d, d, True, dtypes, family=family, q_len=Sq)
    state = (attn.variant.kernel_source("block_state", d, d, True, dtypes, family=family, q_len=Sq)
             if attn.variant.has_mask else None)
    got = emulate_bwd(info, state, q, k, v, o.detach().to(torch.bfloat16), lse.detach(), dout,
                      list(attn.buffers))
    for g, w, what in zip(got, want, ("dq", "dk", "dv")):
        assert _rel(g, w) < 2e-2, what


@pytest.mark.parametrize("case", [("sm90", 64, True), ("sm90", 128, True), ("sm90", 128, False),
                                  ("sm80", 64, True)], ids=lambda c: "-".join(map(str, c)))
def test_emulated_block_tensor_backward_matches_autograd(case):
    """seer.BlockSparseAttention's backward (random 64-blocks per head, a third kept, a query
    block row and a key block column with nothing kept, under causal or alone): the table from
    the tensor beside the rest's, with each 64-key half of the sm90 backward's 128-key tiles
    coded (an MMA warpgroup whose keys keep nothing of a block drops its scores unevaluated, one
    whose keys keep all of it skips the mask), against float64 autograd."""
    family, d, causal = case
    B, H, S, bs = 1, 2, 320, 64
    n = -(-S // bs)
    gen = torch.Generator().manual_seed(5)
    blocks = torch.rand(B, H, n, n, generator=gen) < 0.35
    blocks[:, :, 2] = False  # no key of a query block row
    blocks[:, 1, :, 3] = False  # one head keeps nothing of key block 3: a tile's second half
    blocks[:, 0, 4, :] = True  # a row whose blocks are all kept (full halves, under causal too)
    sparse = ae.seer.BlockSparseAttention(mask_mod=mods.causal if causal else None, block_size=bs)
    attn, buffers = sparse._attn, [blocks]
    q, k, v = _bf16(B, H, S, d, seed=0), _bf16(B, H, S, d, seed=1), _bf16(B, H, S, d, seed=2)
    dout = _bf16(B, H, S, d, seed=3)
    q64, k64, v64 = (x.double().requires_grad_() for x in (q, k, v))
    o, lse = sparse(q64, k64, v64, blocks, return_lse=True)
    want = torch.autograd.grad(o, (q64, k64, v64), dout.double())
    dtypes = _dtypes(buffers)
    info = attn.variant.kernel_source("bwd", d, d, True, dtypes, family=family, q_len=S)
    steps = {line.split()[0] for line in info["plan"].splitlines() if line.strip()}
    assert "block_state_blocks" in steps, info["plan"]
    assert ("block_state" in steps) == causal, info["plan"]
    tables = [attn.variant.kernel_source(step, d, d, True, dtypes, family=family, q_len=S)["source"]
              for step in ("block_state", "block_state_blocks") if step in steps]
    if family == "sm90":
        assert " 64x128 " in info["describe"], info["describe"]
    layout = {"state_heads": H, "rest_b": 0, "rest_h": 0}
    got = emulate_bwd(info, tables, q, k, v, o.detach().to(torch.bfloat16), lse.detach(), dout,
                      buffers, layout=layout)
    for g, w, what in zip(got, want, ("dq", "dk", "dv")):
        assert _rel(g, w) < 2e-2, what


@pytest.mark.parametrize("family", ["sm90", "sm80"])
@pytest.mark.parametrize("name", ["plain", "causal", "alibi"])
def test_emulated_varlen_backward_matches_autograd(name, family):
    attn, variant, buffers, q, k, v, cq, ck, layout = _varlen_inputs(name)
    tq, hq, d = q.shape
    dout = _bf16(tq, hq, d, seed=3)
    q64, k64, v64 = (x.double().requires_grad_() for x in (q, k, v))
    o, lse = attn.varlen(q64, k64, v64, cq, ck, return_lse=True)
    want = torch.autograd.grad(o, (q64, k64, v64), dout.double())
    dtypes = _dtypes(buffers)
    info = variant.kernel_source("bwd", d, d, True, dtypes, varlen=True, family=family)
    assert info["describe"].endswith(" varlen"), info["describe"]
    masked = variant.has_mask and "block_state" in info["plan"]
    state = (variant.kernel_source("block_state", d, d, True, dtypes, varlen=True, family=family)
             if masked else None)
    o16 = o.detach().to(torch.bfloat16)
    layout.update({"o_base": o16, "do_base": dout, "state_batches": len(cq) - 1})
    got = emulate_bwd(info, state, _as_one(q), _as_one(k), _as_one(v), _as_one(o16),
                      lse.detach(), _as_one(dout), buffers, layout=layout)
    for g, w, what in zip(got, want, ("dq", "dk", "dv")):
        assert _rel(g, w) < 2e-2, what


def test_emulated_mla_decode_with_inf_at_a_key_some_rows_mask(monkeypatch):
    """Four speculative queries under a causal mask, inf in the last key's latent vector (V is
    K's first columns): the three rows that mask the key stay finite and equal the reference
    (the block's P V is taken score by score, nvidia/exact_pv.h), the row that keeps it is not
    finite. Also 128 heads x 4 queries: 512 rows, eight query blocks."""
    monkeypatch.setenv("AE_KV_SPLITS", "1")
    hq, sq, lens = 128, 4, [70, 100]
    attn, variant, buffers, qp, k, v, layout, ref, _ = _cache_case("causal", hq, 1, sq, lens, 128,
                                                                   0, D_LATENT, D_V)
    for b, n in enumerate(lens):
        layout["k_base"][b, n - 1, 0, 5] = float("inf")
    info = _fwd_source(variant, D_LATENT, D_V, True, _dtypes(buffers), q_len=hq * sq,
                                 kv_lengths=True, v_in_k=True, device="h200")
    B = len(lens)
    out, _ = emulate(info, qp, k, v, buffers, o_shape=(B, 1, hq * sq, D_V), lse_numel=B * hq * sq,
                     layout=layout, v_in_k=True)
    out = out.view(B, hq, sq, D_V).transpose(1, 2)
    assert torch.isfinite(out[:, :3]).all()
    assert _rel(out[:, :3], ref[:, :3]) < 1e-2
    assert not torch.isfinite(out[:, 3]).all()
