"""The gfx90a forward and backward run on the CPU: their generated source compiled by the
host's g++ over tests/emu/hip_host.h (a fiber per GPU thread, barriers for __syncthreads and
for a wavefront's shuffles and MFMAs) and launched block by block as the planner plans them
(the backward between its row passes, common/bwd_rows.h), checked against the reference
executor (its outputs, and its autograd gradients), on dense tensors, packed sequences,
per-batch key lengths and pages. No AMD GPU has run the kernels yet; this
runs everything but the matrix instructions themselves (their stand-ins compute from the
register layouts gfx90a/mfma.h states). Skipped without g++ 12 or newer."""
import atexit
import hashlib
import math
import os
import pathlib
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import attention_engine as ae
from attention_engine import _C, mods
from attention_engine.positions import with_positions

from conftest import host_gxx

ROOT = pathlib.Path(__file__).resolve().parents[2]
EMU = ROOT / "tests" / "emu"

_gxx = host_gxx  # (the emulators' compiler: g++ 12 or newer)

# One xdist group: the module's fixtures build every kernel below for whichever worker runs any
# of its tests (scripts/test.sh runs pytest with --dist loadgroup), so all of them run in one.
pytestmark = [pytest.mark.skipif(_gxx() is None, reason="needs g++ 12 or newer"),
              pytest.mark.xdist_group("gfx90a_emulated")]

B, HQ, HKV = 1, 2, 1  # GQA 2:1


def _variant(name, n):
    docs = torch.arange(n) // 23  # n: the longer of the two lengths
    table = torch.linspace(-1.0, 1.0, HQ * 65).view(HQ, 65)
    return {
        "relative_bias": lambda: ae.compile(mods.relative_bias(table, 32), mods.causal),
        "retention": lambda: ae.compile(lambda s, b, h, q, k: s * 0.97 ** (q - k).float(), mods.causal,
                                        normalize=ae.normalizers.retention),
        "sink": lambda: ae.compile(mods.softcap(5.0), mods.causal,
                                   normalize=ae.normalizers.softmax_with_sink(torch.full((HQ,), 0.5))),
        "relu_normalized": lambda: ae.compile(mask_mod=mods.sliding_window(40),
                                              normalize=ae.normalizers.relu_normalized),
        "plain": lambda: ae.compile(),
        "causal": lambda: ae.compile(mask_mod=mods.causal),
        "alibi": lambda: ae.compile(mods.alibi(mods.alibi_slopes(HQ)), mods.causal),
        "softcap": lambda: ae.compile(mods.softcap(5.0)),
        "document": lambda: ae.compile(mask_mod=mods.document_mask(docs)),
        "sigmoid_none": lambda: ae.compile(mods.sigmoid(-1.0), normalize="none"),
        # an integer pow (ae::ipow), negative bases and exponents 0 to 6
        "int_pow": lambda: ae.compile(lambda s, b, h, q, k: s + 0.01 * ((q % 5 - 2) ** (k % 7)).float()),
    }[name]()


def _plan(attn, d_qk, d_v, dtype, q_len, splits):
    """The planned forward (kernel_source's dict) for these shapes on an MI250."""
    return _plan_step(attn.variant, attn.buffers, d_qk, d_v, dtype, q_len, splits)


def _plan_step(variant, buffers, d_qk, d_v, dtype, q_len, splits=1, step="fwd", **layout):
    """A step of the MI250's plan (kernel_source's dict); layout: kv_lengths, varlen."""
    dtypes = [str(t.dtype).replace("torch.", "") for t in buffers]
    grads = [t.requires_grad for t in buffers] if step.startswith("bwd") else []
    old = os.environ.get("AE_KV_SPLITS")
    os.environ["AE_KV_SPLITS"] = str(splits)
    try:
        return variant.kernel_source(step, d_qk, d_v, dtype == torch.bfloat16, dtypes,
                                     device="mi250", q_len=q_len, buffer_grads=grads, **layout)
    finally:
        os.environ.pop("AE_KV_SPLITS") if old is None else os.environ.__setitem__("AE_KV_SPLITS", old)


# g++ builds, one per source, started together in a thread pool (_prebuild) and awaited by
# the tests: most of this file's time is the compiler's, and the machine has more than one core.
_POOL = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))
_BUILDS = {}
_BUILD_DIR = pathlib.Path(tempfile.mkdtemp(prefix="ae_emu_"))
atexit.register(shutil.rmtree, _BUILD_DIR, ignore_errors=True)


def _build(source, main="fwd_main.cc", more=()):
    """The emulated binary of a kernel's source (and `more` sources: other kernels it runs
    with) over tests/emu/<main>."""
    def compile_one(path):
        files = []
        for i, text in enumerate((source, *more)):
            files.append(path / f"kernel{i}.cc")
            files[-1].write_text(text)
        # -O0: every load the kernel issues stays (a discarded one past a tensor's end still
        # faults on the emulator's guarded memory, tests/emu/emu_io.h, as it may on a GPU).
        subprocess.run([_gxx(), "-std=c++20", "-O0", "-Wno-psabi", "-I",
                        str(ROOT / "templates"), "-I", str(EMU), "-include", "hip_host.h",
                        *map(str, files), str(EMU / main), "-o", str(path / "run")],
                       check=True)
        return path / "run"
    key = hashlib.sha1("\0".join((main, source, *more)).encode()).hexdigest()[:16]
    if key not in _BUILDS:
        (_BUILD_DIR / key).mkdir()
        _BUILDS[key] = _POOL.submit(compile_one, _BUILD_DIR / key)
    return _BUILDS[key]


def _run(binary, files, args, extra=None):
    """Runs an emulator binary on tensors (name: bytes) and args.txt's positional values and
    keyed lines (tests/emu/emu_io.h keyed); its output files (name: bytes)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for name, data in files.items():
            (tmp / f"{name}.bin").write_bytes(data)
        lines = [" ".join(map(str, args))]
        lines += [f"{key} {' '.join(map(str, vals))}" for key, vals in (extra or {}).items()]
        (tmp / "args.txt").write_text("\n".join(lines) + "\n")
        run = subprocess.run([str(binary), str(tmp)], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-2000:]}"
        return {f.stem: f.read_bytes() for f in tmp.glob("*.bin")}


def _buffer_files(buffers, grads=False):
    """The captured tensors' files and their args.txt values (rank, sizes, and with grads
    whether each gets a gradient)."""
    files, shapes = {}, []
    for i, t in enumerate(buffers):
        files[f"buf{i}"] = t.detach().contiguous().view(torch.uint8).numpy().tobytes()
        shapes += [t.dim(), *t.shape] + ([int(t.requires_grad)] if grads else [])
    return files, shapes


def _tensor(data, dtype, shape):
    return torch.frombuffer(bytearray(data), dtype=torch.int16 if dtype in (torch.bfloat16, torch.float16)
                            else dtype).view(dtype).view(shape)


def emulate(attn, q, k, v, splits=1):
    """The kernel's (out, lse) for bf16 / fp16 q, k, v [B, H, S, D] (split-KV: the ranges'
    partial outputs merged here, as the combine step does)."""
    info = _plan(attn, q.shape[-1], v.shape[-1], q.dtype, q.shape[2], splits)
    bm, bn = map(int, info["describe"].split()[4].split("x"))
    binary = _build(info["source"]).result()
    files, shapes = _buffer_files(attn.buffers)
    for name, t in (("q", q), ("k", k), ("v", v)):
        files[name] = t.contiguous().view(torch.int16).numpy().tobytes()
    Sq, Skv, Dv = q.shape[2], k.shape[2], v.shape[-1]
    args = [B, HQ, HKV, Sq, Skv, q.shape[-1], Dv, bm, bn, info["threads"], splits,
            int(attn.variant.has_mask), 1 / math.sqrt(q.shape[-1]), len(attn.buffers), *shapes]
    got = _run(binary, files, args)
    out = _tensor(got["o"], q.dtype, (B, HQ, Sq, Dv)).float()
    lse = _tensor(got["lse"], torch.float32, (B, HQ, Sq))
    if splits > 1:
        o_part = _tensor(got["o_part"], torch.float32, (-1, B, HQ, Sq, Dv))
        lse_part = _tensor(got["lse_part"], torch.float32, (-1, B, HQ, Sq))
        if attn.normalize == "softmax":
            lse = torch.logsumexp(lse_part, 0)
            w = torch.exp(lse_part - lse).nan_to_num(0.0)
            out = (w.unsqueeze(-1) * o_part).sum(0)
        else:
            out = o_part.sum(0)
    return out, lse


def _inputs(sq, skv, d_qk, d_v, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, HQ, sq, d_qk, generator=g).to(dtype)
    k = torch.randn(B, HKV, skv, d_qk, generator=g).to(dtype)
    v = torch.randn(B, HKV, skv, d_v, generator=g).to(dtype)
    return q, k, v


def _compare(attn, q, k, v, out, lse):
    qf, kf, vf = q.float(), k.float(), v.float()
    if attn.normalize == "none":  # no row statistic
        torch.testing.assert_close(out, attn.reference(qf, kf, vf), atol=2e-2, rtol=2e-2)
        return
    ref, ref_lse = attn.reference(qf, kf, vf, return_lse=True)
    torch.testing.assert_close(out, ref, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(lse, ref_lse, atol=1e-3, rtol=1e-3)


# (variant, d_qk, d_v, dtype): both MFMA shapes (32 rows per wave up to D128, 16 past), 64- and
# 32-key blocks, every normalization path, masks read per element and from a captured tensor.
CASES = [("causal", 64, 64, torch.bfloat16), ("alibi", 128, 128, torch.float16),
         ("document", 128, 128, torch.bfloat16), ("softcap", 256, 256, torch.bfloat16),
         ("sigmoid_none", 192, 128, torch.float16), ("plain", 96, 96, torch.bfloat16),
         ("relative_bias", 64, 64, torch.bfloat16), ("int_pow", 64, 64, torch.bfloat16)]
# Custom row normalizations (common/normalizers.h CustomLinear / CustomLog): their stat and
# finish through the gfx90a rows.
CUSTOM = ["retention", "sink", "relu_normalized"]


# Every test's kernel: (variant, q_len, d_qk, d_v, dtype, splits), as the tests below plan them.
KERNELS = [(name, 150, d_qk, d_v, dtype, 1) for name, d_qk, d_v, dtype in CASES]
KERNELS += [(name, 150, 64, 64, torch.bfloat16, 1) for name in CUSTOM]
KERNELS += [("causal", 5, 128, 128, torch.bfloat16, 3), ("causal", 77, 64, 64, torch.bfloat16, 1)]


@pytest.fixture(scope="module", autouse=True)
def _prebuild():
    for name, q_len, d_qk, d_v, dtype, splits in KERNELS:
        _build(_plan(_variant(name, q_len), d_qk, d_v, dtype, q_len, splits)["source"])


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{str(c[3])[6:]}")
def test_emulated_gfx90a_forward_matches_the_reference(case):
    name, d_qk, d_v, dtype = case
    sq, skv = 150, 77  # two query blocks (one partly past the rows' end), a key tail
    attn = _variant(name, sq)
    q, k, v = _inputs(sq, skv, d_qk, d_v, dtype)
    _compare(attn, q, k, v, *emulate(attn, q, k, v))


@pytest.mark.parametrize("name", CUSTOM)
def test_emulated_custom_normalizations(name):
    attn = _variant(name, 150)
    assert attn.variant.normalize == "custom"
    q, k, v = _inputs(150, 150, 64, 64, torch.bfloat16, seed=5)
    _compare(attn, q, k, v, *emulate(attn, q, k, v))


def test_emulated_split_kv_forward():
    # decode-sized: the few-rows tile (16 rows per wave up to D128) and split-KV
    attn = _variant("causal", 200)
    q, k, v = _inputs(5, 200, 128, 128, torch.bfloat16)
    _compare(attn, q, k, v, *emulate(attn, q, k, v, splits=3))


def test_emulated_inf_in_v_at_masked_keys():
    attn = _variant("causal", 77)
    q, k, v = _inputs(77, 77, 64, 64, torch.bfloat16, seed=3)
    v[:, :, 40, 5] = float("inf")  # masked for query rows < 40
    v[:, :, 41, 7] = float("nan")  # and rows < 41
    out, _ = emulate(attn, q, k, v)
    ref = attn.reference(q.float(), k.float(), v.float())
    assert torch.isfinite(out[:, :, :40]).all()
    torch.testing.assert_close(out, ref, atol=2e-2, rtol=2e-2, equal_nan=True)
    assert torch.isinf(out[:, :, 40:41, 5]).all() and torch.isnan(out[:, :, 41:, 7]).all()


# ---- the backward ----

def _bwd_variant(name, n):
    docs = torch.arange(n) // 23
    if name == "relative_bias_grad":  # a learnable table: its gradient from the kernel's sink
        table = torch.linspace(-1.0, 1.0, HQ * 65).view(HQ, 65).requires_grad_()
        return ae.compile(mods.relative_bias(table, 32), mask_mod=mods.document_mask(docs))
    return _variant(name, n)


def _mask_of(name, n):
    """The variant's mask_mod (the block-state table's source), or None."""
    docs = torch.arange(n) // 23
    return {"causal": mods.causal, "relative_bias_grad": mods.document_mask(docs),
            "retention": mods.causal}.get(name)


def _bwd_plan(attn, d_qk, d_v, dtype, q_len, step="bwd", deterministic=False):
    dtypes = [str(t.dtype).replace("torch.", "") for t in attn.buffers]
    grads = [t.requires_grad for t in attn.buffers]
    info = attn.variant.kernel_source(step, d_qk, d_v, dtype == torch.bfloat16, dtypes,
                                      device="mi250", buffer_grads=grads, q_len=q_len,
                                      deterministic=deterministic)
    assert "bwd gfx90a" in info["plan"], info["plan"]
    assert step != "bwd" or info["describe"].endswith(" det") == deterministic, info["describe"]
    return info


def _bwd_build(attn, d_qk, d_v, dtype, q_len, deterministic=False):
    """The emulated backward: the main kernel, and a custom normalization's row pass."""
    info = _bwd_plan(attn, d_qk, d_v, dtype, q_len, deterministic=deterministic)
    more = [_bwd_plan(attn, d_qk, d_v, dtype, q_len, "bwd_rows_custom")["source"]] \
        if attn.variant.normalize == "custom" else []
    return info, _build(info["source"], "bwd_main.cc", more)


def _kept(mask_mod, sq, skv):
    """Which scores the mask keeps, [B, HQ, sq, skv], from the reference: under softmax with
    q = k = 0 a kept score's weight is positive, a masked one's 0; V = the identity reads the
    weights out."""
    q = torch.zeros(B, HQ, sq, 16)
    k = torch.zeros(B, HKV, skv, 16)
    v = torch.eye(skv).expand(B, HKV, skv, skv).contiguous()
    return ae.compile(mask_mod=mask_mod).reference(q, k, v) > 0


def _block_states(kept, bm, bn):
    """The block-state table (common/block_walk.h codes) for tiles of bm x bn."""
    sq, skv = kept.shape[-2:]
    nq, nk = -(-sq // bm), -(-skv // bn)
    states = torch.empty(B, HQ, nq, nk, dtype=torch.uint8)
    for i in range(nq):
        for j in range(nk):
            tile = kept[:, :, i * bm:(i + 1) * bm, j * bn:(j + 1) * bn].flatten(2)
            states[:, :, i, j] = torch.where(tile.all(-1), 2, torch.where(tile.any(-1), 1, 0))
    return states


def _bits(t):
    return t.detach().contiguous().view(torch.int16 if t.element_size() == 2 else torch.uint8) \
        .numpy().tobytes()


def emulate_bwd(attn, mask_mod, q, k, v, o, lse, dout, deterministic=False):
    """The kernels' (dq, dk, dv, {buffer index: gradient}) for bf16 / fp16 q, k, v, dout and
    the forward's o and lse, as the planned backward computes them."""
    sq, skv, d_qk, d_v = q.shape[2], k.shape[2], q.shape[-1], v.shape[-1]
    info, build = _bwd_build(attn, d_qk, d_v, q.dtype, sq, deterministic)
    bm, bn = map(int, info["describe"].split()[4].split("x"))
    files, shapes = _buffer_files(attn.buffers, grads=True)
    for name, t in (("q", q), ("k", k), ("v", v), ("o", o), ("do", dout)):
        files[name] = _bits(t)
    files["lse"] = lse.detach().float().contiguous().numpy().tobytes()
    if attn.variant.has_mask:
        files["states"] = _block_states(_kept(mask_mod, sq, skv), bm, bn).numpy().tobytes()
    args = [B, HQ, HKV, sq, skv, d_qk, d_v, bm, bn, info["threads"], int(q.dtype == torch.bfloat16),
            int(attn.variant.has_mask), int(attn.variant.normalize != "none"),
            int(attn.variant.normalize == "custom"), int(deterministic), 1 / math.sqrt(d_qk),
            len(attn.buffers), *shapes]
    got = _run(build.result(), files, args)
    dq = _tensor(got["dq"], q.dtype, (B, HQ, sq, d_qk)).float()
    dk = _tensor(got["dk"], q.dtype, (B, HKV, skv, d_qk)).float()
    dv = _tensor(got["dv"], q.dtype, (B, HKV, skv, d_v)).float()
    grads = {i: _tensor(got[f"grad{i}"], torch.float32, t.shape)
             for i, t in enumerate(attn.buffers) if t.requires_grad}
    return dq, dk, dv, grads


def _close(got, want, tol, what):
    scale = want.abs().max().item()
    err = (got - want).abs().max().item()
    assert err <= tol * max(scale, 1e-6), f"{what}: max error {err:.3g} against max |ref| {scale:.3g}"


# (variant, q_len, kv_len, d_qk, d_v, dtype): a mask with empty, partial and full tiles (and a
# key block the causal rows never see), a learnable captured tensor's gradient with a mask
# that reads a captured tensor, normalize none at unequal head dims whose dQ tiles do not
# divide among the waves, a custom row normalization (its row pass before the main kernel);
# query and key tails; GQA 2:1.
# Past head dim 128 (pairs of waves sharing keys, their dP and dS exchanged in LDS): 32 query
# rows per block at 192/128, 16 at 256/256, with the same cases.
# The last: the deterministic mode (dQ tiles taken in turn, common/dq_order.h).
BWD_CASES = [("causal", 150, 150, 64, 64, torch.bfloat16, False),
             ("relative_bias_grad", 100, 150, 128, 128, torch.float16, False),
             ("sigmoid_none", 100, 150, 96, 64, torch.float16, False),
             ("retention", 100, 100, 64, 64, torch.bfloat16, False),
             ("causal", 150, 150, 192, 128, torch.bfloat16, False),
             ("relative_bias_grad", 100, 150, 256, 256, torch.float16, False),
             ("sigmoid_none", 100, 150, 160, 256, torch.bfloat16, False),
             ("causal", 150, 150, 32, 32, torch.bfloat16, True),
             ("causal", 150, 150, 256, 128, torch.bfloat16, True)]


@pytest.fixture(scope="module", autouse=True)
def _prebuild_bwd():
    for name, sq, skv, d_qk, d_v, dtype, det in BWD_CASES:
        _bwd_build(_bwd_variant(name, max(sq, skv)), d_qk, d_v, dtype, sq, det)


@pytest.mark.parametrize("case", BWD_CASES, ids=lambda c: f"{c[0]}-{c[3]}-{c[4]}-{str(c[5])[6:]}"
                         f"{'-det' if c[6] else ''}")
def test_emulated_gfx90a_backward_matches_the_reference(case):
    name, sq, skv, d_qk, d_v, dtype, deterministic = case
    attn = _bwd_variant(name, max(sq, skv))
    q, k, v = _inputs(sq, skv, d_qk, d_v, dtype, seed=7)
    dout = torch.randn(B, HQ, sq, d_v, generator=torch.Generator().manual_seed(8)).to(dtype)
    leaves = [x.float().requires_grad_() for x in (q, k, v)]
    captured = [t for t in attn.buffers if t.requires_grad]
    if attn.variant.normalize != "none":  # the row statistic the prep pass reads
        out, lse = attn.reference(*leaves, return_lse=True)
    else:
        out, lse = attn.reference(*leaves), torch.zeros(B, HQ, sq)
    want = torch.autograd.grad(out, leaves + captured, dout.float())
    dq, dk, dv, grads = emulate_bwd(attn, _mask_of(name, max(sq, skv)), q, k, v,
                                    out.detach().to(dtype), lse, dout, deterministic)
    tol = 3e-2 if dtype == torch.bfloat16 else 1e-2
    for got, ref, what in zip((dq, dk, dv), want, ("dq", "dk", "dv")):
        _close(got, ref, tol, what)
    assert len(grads) == len(captured)
    for got, ref in zip(grads.values(), want[3:]):
        _close(got, ref, tol, "captured gradient")


# ---- other layouts (common/kv_layout.h): packed sequences (VarlenLayout), per-batch key
# lengths (KvLengthsLayout). The tensors end where an inaccessible page begins
# (tests/emu/emu_io.h guarded): a read past a sequence's or the cache's rows faults. ----------

def _as_one(x):
    return x.transpose(0, 1).unsqueeze(0)  # [T, H, D] -> [1, H, T, D]


def _cumulative(lens):
    return torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int32)


def _packed(name, lq, lk, d, dtype, seed=0):
    """Packed sequences as varlen takes them ([T, H, D]; lq, lk the lengths), their cumulative
    lengths, and the variant the op plans (its positions rewrite, with the two lengths it
    captures)."""
    attn = _variant(name, max(lk))
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(sum(lq), HQ, d, generator=g).to(dtype)
    k = torch.randn(sum(lk), HKV, d, generator=g).to(dtype)
    v = torch.randn(sum(lk), HKV, d, generator=g).to(dtype)
    variant = _C.build_variant(with_positions(attn._ref.trace_json))
    lq_t, lk_t = torch.tensor(lq), torch.tensor(lk)
    return attn, variant, list(attn.buffers) + [lk_t - lq_t, lk_t], q, k, v


def _splits(splits, skv, bn):
    """The split count as the planner makes it: ranges of whole blocks, none empty."""
    n_kv = -(-skv // bn)
    return -(-n_kv // -(-n_kv // min(splits, n_kv))) if splits > 1 else 1


def emulate_fwd_layout(info, buffers, q4, k4, v4, files, extra, *, grid, skv, o_shape, lse_numel,
                       splits=1, combine=None, row_stats=True):
    """A planned forward on [B, H, S, D] views q4, k4, v4 of the tensors in `files` (their
    strides passed as they are), with the layout's keyed lines; (o [o_shape], lse) as floats,
    a split launch's merged by the planned combine kernel (row_stats: softmax's merge)."""
    bm, bn = map(int, info["describe"].split()[4].split("x"))
    binary = _build(info["source"], more=(combine["source"],) if combine else ()).result()
    bfiles, shapes = _buffer_files(buffers)
    Bn, Hq, Sq = grid
    splits = _splits(splits, skv, bn)
    args = [Bn, Hq, k4.shape[1], Sq, skv, q4.shape[-1], v4.shape[-1], bm, bn, info["threads"],
            splits, int("block_state" in info["plan"]), 1 / math.sqrt(q4.shape[-1]), len(buffers),
            *shapes]
    extra = dict(extra, q_stride=q4.stride()[:3], k_stride=k4.stride()[:3], v_stride=v4.stride()[:3],
                 o_numel=[math.prod(o_shape)], lse_numel=[lse_numel])
    if splits > 1:
        assert combine is not None
        extra["combine"] = [int(row_stats)]
    got = _run(binary, {**bfiles, **files}, args, extra)
    return _tensor(got["o"], q4.dtype, o_shape).float(), _tensor(got["lse"], torch.float32, (lse_numel,))


def emulate_varlen(attn, variant, buffers, q, k, v, lq, lk, splits=1, q_len=None):
    """The planned varlen forward's (out [T, H, Dv], lse [H, T])."""
    (tq, hq, d), dv = q.shape, v.shape[-1]
    q_len = q_len or max(lq)
    info = _plan_step(variant, buffers, d, dv, q.dtype, q_len, splits, varlen=True)
    assert info["describe"].endswith(" varlen") and "fwd gfx90a" in info["plan"], info["plan"]
    combine = None
    if splits > 1:
        assert " split" in info["describe"], info["describe"]
        combine = _plan_step(variant, buffers, d, dv, q.dtype, q_len, splits, "fwd_combine", varlen=True)
        assert combine["describe"].endswith(" varlen"), combine["describe"]
    files = {"q": _bits(q), "k": _bits(k), "v": _bits(v),
             "cu_q": _cumulative(lq).numpy().tobytes(), "cu_k": _cumulative(lk).numpy().tobytes(),
             "kv_lens": torch.tensor(lk).numpy().tobytes()}
    extra = {"o_stride": [tq * hq * dv, dv, hq * dv], "kv_lens": [8], "varlen": [tq]}
    out, lse = emulate_fwd_layout(info, buffers, _as_one(q), _as_one(k), _as_one(v), files, extra,
                                  grid=(len(lq), hq, max(lq)), skv=max(lk), o_shape=(tq, hq, dv),
                                  lse_numel=hq * tq, splits=splits, combine=combine,
                                  row_stats=variant.normalize == "softmax")
    return out, lse.view(hq, tq)


def _check_varlen(attn, q, k, v, lq, lk, out, lse):
    ref, ref_lse = attn.varlen(q.double(), k.double(), v.double(), _cumulative(lq), _cumulative(lk),
                               return_lse=True)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref.float(), atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(lse, ref_lse.float(), atol=1e-3, rtol=1e-3)


# Random lengths (not multiples of the tiles), a sequence of none in the middle and one at the
# end (its rows start at the tensors' end), both MFMA shapes (32 rows per wave, 16 past D128 and
# for at most 64 rows).
VARLEN_LENGTHS = {"mixed": ([37, 0, 130, 1, 65, 0], [37, 0, 200, 9, 100, 0]),
                  "short": ([23, 50, 0, 7], [23, 61, 0, 90])}
VARLEN_FWD = [("causal", 64, torch.bfloat16, "mixed"), ("alibi", 128, torch.float16, "mixed"),
              ("plain", 256, torch.bfloat16, "short"), ("softcap", 128, torch.bfloat16, "short")]


@pytest.mark.parametrize("case", VARLEN_FWD, ids=lambda c: f"{c[0]}-{c[1]}-{str(c[2])[6:]}-{c[3]}")
def test_emulated_gfx90a_varlen_forward_matches_the_reference(case):
    name, d, dtype, lengths = case
    lq, lk = VARLEN_LENGTHS[lengths]
    attn, variant, buffers, q, k, v = _packed(name, lq, lk, d, dtype)
    out, lse = emulate_varlen(attn, variant, buffers, q, k, v, lq, lk)
    _check_varlen(attn, q, k, v, lq, lk, out, lse)


@pytest.mark.parametrize("name", ["plain", "causal"])
def test_emulated_gfx90a_varlen_decode_with_a_split(name):
    """A query per sequence (one sequence empty, one with a single key) with the keys split into
    ranges, one per block (short sequences' later ranges are empty), merged by the planned
    combine kernel on the packed rows."""
    lq, lk = [1, 1, 1, 0, 1], [1, 17, 300, 0, 150]
    attn, variant, buffers, q, k, v = _packed(name, lq, lk, 128, torch.bfloat16, seed=2)
    out, lse = emulate_varlen(attn, variant, buffers, q, k, v, lq, lk, splits=1000, q_len=1)
    _check_varlen(attn, q, k, v, lq, lk, out, lse)


def _cache(name, sq, lens, cap, d, dtype, seed=0, lost=None):
    """with_kvcache's call on a contiguous cache [B, cap, HKV, d] holding NaN past each length:
    q [B, sq, HQ, d], the variant the op plans (its positions rewrite with the lengths it
    captures), the float64 reference's (out, lse); lost [B, cap]: rows the kernel reads as
    zeros (a page table entry that names no page), zeros in the reference's cache."""
    attn = _variant(name, cap)
    g = torch.Generator().manual_seed(seed)
    lens_t = torch.tensor(lens, dtype=torch.int32)
    kv = torch.randn(len(lens), cap, HKV, d, generator=g).to(dtype)
    vv = torch.randn(len(lens), cap, HKV, d, generator=g).to(dtype)
    q = torch.randn(len(lens), sq, HQ, d, generator=g).to(dtype)
    past = torch.arange(cap)[None, :] >= lens_t[:, None]
    zero = past if lost is None else past | lost
    kz = kv.double().masked_fill(zero[:, :, None, None], 0.0)
    vz = vv.double().masked_fill(zero[:, :, None, None], 0.0)
    kv[past], vv[past] = float("nan"), float("nan")
    ref, ref_lse = attn.with_kvcache(q.double(), kz, vz, lens_t, return_lse=True)
    variant = _C.build_variant(with_positions(attn._ref.trace_json, sq))
    return variant, list(attn.buffers) + [lens_t.long()], q, kv, vv, ref, ref_lse


@pytest.mark.parametrize("case", [("causal", 20, 64, torch.bfloat16, 1), ("alibi", 100, 128, torch.float16, 1),
                                  ("plain", 1, 128, torch.bfloat16, 3), ("softcap", 5, 256, torch.bfloat16, 2)],
                         ids=lambda c: f"{c[0]}-q{c[1]}-{c[2]}-{str(c[3])[6:]}-split{c[4]}")
def test_emulated_gfx90a_forward_on_kv_lengths(case):
    name, sq, d, dtype, splits = case
    lens, cap = [sq + 2, max(sq, 70), 150], 192  # (at least sq: the queries are the last tokens)
    variant, buffers, q, kv, vv, ref, ref_lse = _cache(name, sq, lens, cap, d, dtype)
    info = _plan_step(variant, buffers, d, d, dtype, sq, splits, kv_lengths=True)
    assert info["describe"].endswith(" kvlens") and "fwd gfx90a" in info["plan"], info["plan"]
    combine = _plan_step(variant, buffers, d, d, dtype, sq, splits, "fwd_combine", kv_lengths=True) \
        if splits > 1 else None
    Bn = len(lens)
    qp = q.transpose(1, 2).contiguous()
    files = {"q": _bits(qp), "k": _bits(kv), "v": _bits(vv),
             "kv_lens": torch.tensor(lens, dtype=torch.int32).numpy().tobytes()}
    out, lse = emulate_fwd_layout(info, buffers, qp, kv.transpose(1, 2), vv.transpose(1, 2), files,
                                  {"kv_lens": [4]}, grid=(Bn, HQ, sq), skv=cap,
                                  o_shape=(Bn, HQ, sq, d), lse_numel=Bn * HQ * sq, splits=splits,
                                  combine=combine)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.transpose(1, 2), ref.float(), atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(lse.view(Bn, HQ, sq), ref_lse.float(), atol=1e-3, rtol=1e-3)


def emulate_varlen_bwd(variant, buffers, q, k, v, o, lse, dout, lq, lk):
    """The planned varlen backward's (dq, dk, dv), token-major as q, k, v; a masked variant's
    table from the planned block-state pass."""
    (tq, hq, d), (tk, hkv, _), dv = q.shape, k.shape, v.shape[-1]
    info = _plan_step(variant, buffers, d, dv, q.dtype, max(lq), step="bwd", varlen=True)
    assert info["describe"].endswith(" varlen") and "bwd gfx90a" in info["plan"], info["plan"]
    masked = "block_state" in info["plan"]
    more = ()
    if masked:
        state = _plan_step(variant, buffers, d, dv, q.dtype, max(lq), step="block_state", varlen=True)
        assert state["describe"].endswith(" varlen"), state["describe"]
        more = (state["source"],)
    bm, bn = map(int, info["describe"].split()[4].split("x"))
    bfiles, shapes = _buffer_files(buffers, grads=True)
    files = {"q": _bits(q), "k": _bits(k), "v": _bits(v), "o": _bits(o), "do": _bits(dout),
             "lse": lse.detach().float().contiguous().numpy().tobytes(),
             "cu_q": _cumulative(lq).numpy().tobytes(), "cu_k": _cumulative(lk).numpy().tobytes(),
             "kv_lens": torch.tensor(lk).numpy().tobytes()}
    args = [len(lq), hq, hkv, max(lq), max(lk), d, dv, bm, bn, info["threads"],
            int(q.dtype == torch.bfloat16), int(masked), int(variant.normalize != "none"),
            0, 0, 1 / math.sqrt(d), len(buffers), *shapes]
    extra = {"q_stride": _as_one(q).stride()[:3], "k_stride": _as_one(k).stride()[:3],
             "v_stride": _as_one(v).stride()[:3], "o_stride": _as_one(o).stride()[:3],
             "q_numel": [q.numel()], "k_numel": [k.numel()], "v_numel": [v.numel()],
             "varlen": [tq, 8]}
    got = _run(_build(info["source"], "bwd_main.cc", more).result(), {**bfiles, **files}, args, extra)
    return (_tensor(got["dq"], q.dtype, q.shape).float(), _tensor(got["dk"], q.dtype, k.shape).float(),
            _tensor(got["dv"], q.dtype, v.shape).float())


VARLEN_BWD = [("causal", 64, torch.bfloat16, "mixed"), ("plain", 128, torch.float16, "mixed"),
              ("alibi", 64, torch.bfloat16, "short"), ("sigmoid_none", 32, torch.bfloat16, "short"),
              ("causal", 192, torch.bfloat16, "short")]


@pytest.mark.parametrize("case", VARLEN_BWD, ids=lambda c: f"{c[0]}-{c[1]}-{str(c[2])[6:]}-{c[3]}")
def test_emulated_gfx90a_varlen_backward_matches_autograd(case):
    name, d, dtype, lengths = case
    lq, lk = VARLEN_LENGTHS[lengths]
    attn, variant, buffers, q, k, v = _packed(name, lq, lk, d, dtype, seed=4)
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(9)).to(dtype)
    leaves = [x.double().requires_grad_() for x in (q, k, v)]
    cq, ck = _cumulative(lq), _cumulative(lk)
    if attn.normalize != "none":
        o, lse = attn.varlen(*leaves, cq, ck, return_lse=True)
    else:
        o, lse = attn.varlen(*leaves, cq, ck), torch.zeros(HQ, q.shape[0])
    want = torch.autograd.grad(o, leaves, dout.double())
    got = emulate_varlen_bwd(variant, buffers, q, k, v, o.detach().to(dtype), lse, dout, lq, lk)
    tol = 3e-2 if dtype == torch.bfloat16 else 1e-2
    for g, w, what in zip(got, want, ("dq", "dk", "dv")):
        assert torch.isfinite(g).all(), what
        _close(g, w.float(), tol, what)


# Pages (PagedLayout: gfx90a/tile_io.h load_paged): a shuffled table over a pool with a page
# nobody owns, NaN there and past each length; `lost`: in-length entries that name no page
# (-1, past the pool), whose rows are zeros.
PAGED = [("causal", 20, 64, torch.bfloat16, 16, 1, True), ("alibi", 1, 128, torch.float16, 64, 2, False),
         ("plain", 100, 128, torch.bfloat16, 64, 1, True), ("softcap", 5, 256, torch.bfloat16, 16, 3, False)]


@pytest.mark.parametrize("case", PAGED, ids=lambda c: f"{c[0]}-q{c[1]}-{c[2]}-{str(c[3])[6:]}-page{c[4]}"
                         f"-split{c[5]}{'-lost' if c[6] else ''}")
def test_emulated_gfx90a_forward_on_pages(case):
    name, sq, d, dtype, page, splits, lost_pages = case
    lens, cap = [sq + 2, max(sq, 70), 150], 192
    Bn, per = len(lens), cap // page
    perm = torch.randperm(Bn * per, generator=torch.Generator().manual_seed(3)).view(Bn, per)
    table, lost = perm.int(), torch.zeros(Bn, cap, dtype=torch.bool)
    if lost_pages:  # batch 2's second page, batch 1's first (their pages then nobody's)
        table[2, 1], table[1, 0] = -1, Bn * per + 3
        lost[2, page:2 * page] = lost[1, :page] = True
    variant, buffers, q, kv, vv, ref, ref_lse = _cache(name, sq, lens, cap, d, dtype, lost=lost)
    info = _plan_step(variant, buffers, d, d, dtype, sq, splits, kv_lengths=True, page_size=page)
    assert info["describe"].endswith(f" page{page}") and "fwd gfx90a" in info["plan"], info["plan"]
    combine = _plan_step(variant, buffers, d, d, dtype, sq, splits, "fwd_combine", kv_lengths=True,
                         page_size=page) if splits > 1 else None
    pools = []
    for x in (kv, vv):  # [pages, page, HKV, d]: the last page nobody's
        pool = torch.full((Bn * per + 1, page, HKV, d), float("nan")).to(dtype)
        pool[perm.flatten()] = x.reshape(Bn * per, page, HKV, d)
        pool[perm.flatten()[(table.flatten() != perm.flatten())]] = float("nan")
        pools.append(pool)
    qp = q.transpose(1, 2).contiguous()
    files = {"q": _bits(qp), "k": _bits(pools[0]), "v": _bits(pools[1]),
             "kv_lens": torch.tensor(lens, dtype=torch.int32).numpy().tobytes(),
             "table": table.contiguous().numpy().tobytes()}
    out, lse = emulate_fwd_layout(info, buffers, qp, pools[0].transpose(1, 2), pools[1].transpose(1, 2),
                                  files, {"kv_lens": [4], "pages": [per, Bn * per + 1]},
                                  grid=(Bn, HQ, sq), skv=cap, o_shape=(Bn, HQ, sq, d),
                                  lse_numel=Bn * HQ * sq, splits=splits, combine=combine)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.transpose(1, 2), ref.float(), atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(lse.view(Bn, HQ, sq), ref_lse.float(), atol=1e-3, rtol=1e-3)
