"""Correctness of the fused GPU kernels (every test is marked gpu: skipped without CUDA).

Tolerance rule (FlashAttention's): for each result,
    ref = attn.reference(...) on the inputs upcast to fp32 (fp64 where cheap),
    pt  = the same math in plain PyTorch in the inputs' own dtype (pt_attention below:
          low-precision matmuls, mods, softmax and P @ V),
and the kernel passes when
    max|kernel - ref| <= F * max|pt - ref| + floor,
with F = 2 for out and lse (3 with softcap, as FA3), F = 3 for dq, dk, dv and the gradients of
captured tensors, and floor = 1e-5 + max|round(ref) - ref|: the error of the correctly
rounded result, so a kernel that returns it always passes (this covers sequence length 1,
where pt is exact).

The kernels' outputs cannot be poisoned from outside: instead every result must be finite
(lse may be -inf only on rows with nothing kept), fully masked rows must give exactly 0 and
exact zero gradients, and each test first asserts that attn.backend_for() picked a fused
kernel and that no fallback warning was raised; kernels must not write into their inputs.

Fixed seeds throughout. Run (pass -s to see each case's errors next to its bounds):
    PYTHONPATH=python python -m pytest -q -rs tests/python/test_gpu_kernels.py
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import pytest
import torch

import attention_engine as ae
from attention_engine import mods

pytestmark = pytest.mark.gpu

DEV = "cuda"
BF16, FP16 = torch.bfloat16, torch.float16
KERNEL_BACKENDS = ("sm80", "sm90")
FLOOR = 1e-5
FP64_REF_MAX_SCORES = 1 << 25  # reference in fp64 up to this many scores (B*Hq*Sq*Skv)

# Constants of the variants: fixed, so that each variant is one kernel whatever the shape.
WINDOW = 100
SOFTCAP = 2.0           # scores ~ N(0, 1): tanh is well in its nonlinear range
MAX_DISTANCE = 64
SIGMOID_BIAS = -5.0     # about -log(S), as in sigmoid attention


# ---------------------------------------------------------------------------------------------
# Shapes, inputs and variants
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    B: int = 2
    Hq: int = 4
    Hkv: int = 4
    Sq: int = 1000
    Skv: int = 1000
    Dqk: int = 128
    Dv: int = 128

    def __str__(self):
        return (f"B{self.B} H{self.Hq}/{self.Hkv} S{self.Sq}x{self.Skv} "
                f"D{self.Dqk}/{self.Dv}")


@dataclass
class Mods:
    """What ae.compile gets, plus the captured tensors whose gradients are checked."""
    score_mod: Optional[Callable] = None
    mask_mod: Optional[Callable] = None
    normalize: str = "softmax"
    grads_of: tuple = ()
    out_factor: float = 2.0
    scale: Optional[float] = None  # ae.compile's; None: 1 / sqrt(Dqk)


def cpu_gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_doc_ids(S: int, seed: int = 7) -> torch.Tensor:
    """Packed documents of random lengths (about 1 per 200 tokens, at least 2 when S > 1)."""
    cuts = torch.randperm(max(S - 1, 0), generator=cpu_gen(seed))[:max(1, S // 200)] + 1
    starts = torch.zeros(S, dtype=torch.int32)
    starts[cuts] = 1
    return starts.cumsum(0).to(torch.int32).to(DEV)


def live_rows(Sq: int, seed: int = 11) -> torch.Tensor:
    """Rows that keep anything: the first 130 (a whole query tile and more) are dead, about
    half of the rest at random."""
    alive = torch.rand(Sq, generator=cpu_gen(seed)) > 0.5
    alive[:130] = False
    return alive.to(DEV)


def _plain(s: Shape) -> Mods:
    return Mods()


def _causal(s: Shape) -> Mods:
    return Mods(mask_mod=mods.causal)


def _causal_bottom_right(s: Shape) -> Mods:
    """Causal aligned to the end of the keys (decoding with a KV cache)."""
    offset = s.Skv - s.Sq
    return Mods(mask_mod=lambda b, h, q_idx, kv_idx: q_idx + offset >= kv_idx)


def _sliding_window(s: Shape) -> Mods:
    return Mods(mask_mod=mods.sliding_window(WINDOW))


def _alibi_causal(s: Shape) -> Mods:
    return Mods(mods.alibi(mods.alibi_slopes(s.Hq, device=DEV)), mods.causal)


def _softcap(s: Shape) -> Mods:
    return Mods(mods.softcap(SOFTCAP), out_factor=3.0)


def _relative_bias(s: Shape) -> Mods:
    table = (0.5 * torch.randn(s.Hq, 2 * MAX_DISTANCE + 1, generator=cpu_gen(5))).to(DEV)
    table.requires_grad_()
    return Mods(mods.relative_bias(table, MAX_DISTANCE), grads_of=(table,))


def _relative_bias_large(s: Shape) -> Mods:
    """A table too large for the sm90 backward's spare shared memory on an H100/H200: its
    gradient goes to global atomics (the sm80 backward may still fit it, at a smaller tile)."""
    md = 2048
    table = (0.5 * torch.randn(s.Hq, 2 * md + 1, generator=cpu_gen(5))).to(DEV)
    table.requires_grad_()
    return Mods(mods.relative_bias(table, md), mods.causal, grads_of=(table,))


def _alibi_learned(s: Shape) -> Mods:
    """Learnable ALiBi slopes: the gradient's offset depends on h only (one register sum per
    thread and query head)."""
    slopes = mods.alibi_slopes(s.Hq, device=DEV).requires_grad_()
    return Mods(mods.alibi(slopes), mods.causal, grads_of=(slopes,))


def _bias_and_slopes(s: Shape) -> Mods:
    """Two learnable tensors at once: a per-score table and per-(b, h) slopes."""
    table = (0.5 * torch.randn(s.Hq, 2 * MAX_DISTANCE + 1, generator=cpu_gen(6))).to(DEV)
    table.requires_grad_()
    slopes = (0.05 * torch.rand(s.B, s.Hq, generator=cpu_gen(8))).to(DEV).requires_grad_()
    bias = mods.relative_bias(table, MAX_DISTANCE)

    def score_mod(score, b, h, q_idx, kv_idx):
        return bias(score, b, h, q_idx, kv_idx) + slopes[b, h] * (kv_idx - q_idx)
    return Mods(score_mod, mods.causal, grads_of=(table, slopes))


def _document(s: Shape) -> Mods:
    """Packed documents; with fewer queries than keys (decode), the queries are the last
    positions, causal within their document."""
    if s.Sq == s.Skv:
        return Mods(mask_mod=mods.document_mask(random_doc_ids(s.Sq)))
    doc, offset = random_doc_ids(s.Skv), s.Skv - s.Sq
    return Mods(mask_mod=lambda b, h, q_idx, kv_idx:
                (doc[q_idx + offset] == doc[kv_idx]) & (q_idx + offset >= kv_idx))


def _document_keys(s: Shape) -> Mods:
    """Per-batch documents (a [B, S] id tensor) and dropped keys: a mask whose loads split into
    a row term (doc[b, q]) and two column terms (doc[b, k], kept[k]) (codegen/mask_split.h)."""
    assert s.Sq == s.Skv
    doc = torch.stack([random_doc_ids(s.Skv, seed=7 + b) for b in range(s.B)])
    kept = (torch.rand(s.Skv, generator=cpu_gen(5)) > 0.1).to(DEV)
    return Mods(mask_mod=lambda b, h, q_idx, kv_idx:
                (doc[b, q_idx] == doc[b, kv_idx]) & kept[kv_idx] & (q_idx >= kv_idx))


def _sigmoid(s: Shape) -> Mods:
    return Mods(mods.sigmoid(SIGMOID_BIAS), normalize="none")


def _relu_squared(s: Shape) -> Mods:
    return Mods(mods.relu_squared, normalize="none")


def _masked_rows(s: Shape, normalize: str = "softmax") -> Mods:
    """Dead rows (the first 130 and random others) and a whole dead head (h == 1)."""
    alive = live_rows(s.Sq)

    def mask(b, h, q_idx, kv_idx):
        return alive[q_idx] & (kv_idx <= q_idx) & (h != 1)
    score_mod = mods.sigmoid(SIGMOID_BIAS) if normalize == "none" else None
    return Mods(score_mod, mask, normalize=normalize)


VARIANTS: dict[str, Callable[[Shape], Mods]] = {
    "plain": _plain,
    "causal": _causal,
    "causal_bottom_right": _causal_bottom_right,
    "sliding_window": _sliding_window,
    "alibi_causal": _alibi_causal,
    "softcap": _softcap,
    "relative_bias": _relative_bias,
    "relative_bias_large": _relative_bias_large,
    "alibi_learned": _alibi_learned,
    "bias_and_slopes": _bias_and_slopes,
    "document": _document,
    "document_keys": _document_keys,
    "sigmoid": _sigmoid,
    "relu_squared": _relu_squared,
    "masked_rows": _masked_rows,
    "masked_rows_none": lambda s: _masked_rows(s, "none"),
    # Plain softmax scores get the scale inside the kernels' exp2, which needs it positive:
    # a larger one, and a negative one (the kernels' checked path).
    "plain_scale_0.3": lambda s: replace(_plain(s), scale=0.3),
    "causal_scale_-0.05": lambda s: replace(_causal(s), scale=-0.05),
}


def make_qkv(s: Shape, dtype: torch.dtype, seed: int = 0, layout: str = "bhsd"):
    """Random q, k, v leaves requiring grad. layout "bshd": each is a [B, S, H, D] tensor
    transposed to [B, H, S, D] (not contiguous)."""
    gen = torch.Generator(device=DEV).manual_seed(seed)

    def rand(H, S, D):
        if layout == "bshd":
            x = torch.randn(s.B, S, H, D, generator=gen, device=DEV, dtype=dtype).transpose(1, 2)
        else:
            x = torch.randn(s.B, H, S, D, generator=gen, device=DEV, dtype=dtype)
        return x.requires_grad_()
    return rand(s.Hq, s.Sq, s.Dqk), rand(s.Hkv, s.Skv, s.Dqk), rand(s.Hkv, s.Skv, s.Dv)


def make_cotangents(s: Shape, dtype: torch.dtype, seed: int = 1, lse: bool = False):
    gen = torch.Generator(device=DEV).manual_seed(seed)
    dout = torch.randn(s.B, s.Hq, s.Sq, s.Dv, generator=gen, device=DEV, dtype=dtype)
    dlse = (torch.randn(s.B, s.Hq, s.Sq, generator=gen, device=DEV, dtype=torch.float32)
            if lse else None)
    return dout, dlse


# ---------------------------------------------------------------------------------------------
# The "pt" path: the same math in plain PyTorch, in the inputs' dtype
# ---------------------------------------------------------------------------------------------

def index_grids(B, H, Sq, Skv, device):
    return (torch.arange(B, device=device).view(B, 1, 1, 1),
            torch.arange(H, device=device).view(1, H, 1, 1),
            torch.arange(Sq, device=device).view(1, 1, Sq, 1),
            torch.arange(Skv, device=device).view(1, 1, 1, Skv))


def keep_mask(m: Mods, B, H, Sq, Skv, device) -> Optional[torch.Tensor]:
    if m.mask_mod is None:
        return None
    keep = m.mask_mod(*index_grids(B, H, Sq, Skv, device))
    return torch.as_tensor(keep, device=device).expand(B, H, Sq, Skv)


def pt_attention(q, k, v, m: Mods, return_lse: bool):
    """Scores from a low-precision matmul, the mods, softmax (or not) and P @ V, all in the
    inputs' dtype (a mod that promotes to fp32, e.g. by adding an fp32 bias, is rounded back);
    lse, an fp32 output, is the fp32 logsumexp of those low-precision scores.
    Fully masked rows give 0 (a finite stand-in keeps softmax's gradient free of nan)."""
    dtype = q.dtype
    B, H, Sq, Dqk = q.shape
    Skv = k.shape[2]
    g = H // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    s = (q @ k.transpose(-1, -2)) * (m.scale if m.scale is not None else 1.0 / math.sqrt(Dqk))
    if m.score_mod is not None:
        s = m.score_mod(s, *index_grids(B, H, Sq, Skv, q.device)).to(dtype).expand(B, H, Sq, Skv)
    keep = keep_mask(m, B, H, Sq, Skv, q.device)
    if m.normalize == "none":
        p = s if keep is None else s.masked_fill(~keep, 0.0)
        return p @ v, None
    if keep is None:
        keep = torch.ones(B, H, Sq, Skv, dtype=torch.bool, device=q.device)
    masked = s.masked_fill(~keep, float("-inf"))
    row_ok = keep.any(-1, keepdim=True)
    p = torch.softmax(torch.where(row_ok, masked, torch.zeros_like(s)), -1) * row_ok
    # lse is returned in fp32: from the low-precision scores, not rounded to the low dtype.
    lse = torch.logsumexp(masked.float(), -1) if return_lse else None
    return p @ v, lse


# ---------------------------------------------------------------------------------------------
# Running the three paths
# ---------------------------------------------------------------------------------------------

@dataclass
class Result:
    out: torch.Tensor
    lse: Optional[torch.Tensor]
    grads: dict = field(default_factory=dict)  # name -> gradient


def forward_backward(fn, q, k, v, buffers, dout, dlse, softmax: bool) -> Result:
    """fn(q, k, v) -> (out, lse or None); then the gradients of q, k, v and `buffers` for
    the cotangents dout (and dlse, if given), cast to the outputs' dtypes."""
    out, lse = fn(q, k, v)
    outputs, cotangents = [out], [dout.to(out.dtype)]
    if dlse is not None:
        outputs.append(lse)
        cotangents.append(dlse.to(lse.dtype))
    inputs = (q, k, v) + tuple(buffers)
    grads = torch.autograd.grad(outputs, inputs, cotangents, materialize_grads=True)
    names = ["dq", "dk", "dv"] + [f"d_buffer{i}" for i in range(len(buffers))]
    return Result(out.detach(), None if lse is None else lse.detach(),
                  {n: g_ for n, g_ in zip(names, grads)})


def _fallback_warnings(records):
    return [str(w.message) for w in records
            if issubclass(w.category, UserWarning) and "reference" in str(w.message).lower()]


def run_kernel(attn, m: Mods, q, k, v, dout, dlse, expect_kernel: bool = True) -> Result:
    softmax = m.normalize == "softmax"

    def fn(q_, k_, v_):
        return attn(q_, k_, v_, return_lse=True) if softmax else (attn(q_, k_, v_), None)
    if not expect_kernel:  # leaves the warnings to the caller's pytest.warns
        return forward_backward(fn, q, k, v, m.grads_of, dout, dlse, softmax)
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        res = forward_backward(fn, q, k, v, m.grads_of, dout, dlse, softmax)
        torch.cuda.synchronize()
    fallbacks = _fallback_warnings(records)
    assert not fallbacks, f"the kernel path fell back: {fallbacks}"
    return res


def run_reference(attn, m: Mods, q, k, v, dout, dlse, ref_dtype) -> Result:
    softmax = m.normalize == "softmax"
    up = [x.detach().to(ref_dtype).requires_grad_() for x in (q, k, v)]

    def fn(q_, k_, v_):
        if softmax:
            return attn.reference(q_, k_, v_, return_lse=True)
        return attn.reference(q_, k_, v_), None
    return forward_backward(fn, *up, m.grads_of, dout, dlse, softmax)


def run_pt(m: Mods, q, k, v, dout, dlse) -> Result:
    softmax = m.normalize == "softmax"
    return forward_backward(lambda *x: pt_attention(*x, m, softmax), q, k, v, m.grads_of,
                            dout, dlse, softmax)


def ref_dtype_for(s: Shape) -> torch.dtype:
    scores = s.B * s.Hq * s.Sq * s.Skv
    return torch.float64 if scores <= FP64_REF_MAX_SCORES else torch.float32


# ---------------------------------------------------------------------------------------------
# Comparisons
# ---------------------------------------------------------------------------------------------

def max_abs(x: torch.Tensor) -> float:
    return x.abs().max().item() if x.numel() else 0.0


def compare(name, got, ref, pt, factor, rounding_dtype, lines, failures):
    """Appends one report line; a failure line when the rule is broken."""
    got, pt = got.to(ref.dtype), pt.to(ref.dtype)
    err, pt_err = max_abs(got - ref), max_abs(pt - ref)
    floor = FLOOR + max_abs(ref.to(rounding_dtype).to(ref.dtype) - ref)
    bound = factor * pt_err + floor
    line = f"{name:>9}: err {err:.3e}  pt {pt_err:.3e}  bound {bound:.3e}"
    lines.append(line)
    if not err <= bound:  # also catches nan
        failures.append(line)


def check_finite(name, x, failures, allow_neginf=False):
    bad = ~torch.isfinite(x)
    if allow_neginf:
        bad &= ~torch.isneginf(x)
    if bad.any():
        failures.append(f"{name}: {int(bad.sum())} non-finite elements "
                        f"(nan: {int(torch.isnan(x).sum())})")


def check_against_reference(kern: Result, ref: Result, pt: Result, m: Mods,
                            dtype: torch.dtype, what: str):
    lines, failures = [], []
    check_finite("out", kern.out, failures)
    if kern.out.dtype != dtype:
        failures.append(f"out dtype {kern.out.dtype}, expected {dtype}")
    compare("out", kern.out, ref.out, pt.out, m.out_factor, dtype, lines, failures)
    if ref.lse is not None:
        check_lse(kern.lse, ref.lse, pt.lse, m.out_factor, lines, failures)
    for name, g_ref in ref.grads.items():
        g = kern.grads[name]
        check_finite(name, g, failures)
        if g.shape != g_ref.shape:
            failures.append(f"{name}: shape {tuple(g.shape)}, expected {tuple(g_ref.shape)}")
            continue
        g_dtype = dtype if name in ("dq", "dk", "dv") else g.dtype
        compare(name, g, g_ref, pt.grads[name], 3.0, g_dtype, lines, failures)
    report = f"{what}\n  " + "\n  ".join(lines)
    print(report)
    assert not failures, report + "\nFAILED:\n  " + "\n  ".join(failures)


def check_lse(lse, ref_lse, pt_lse, factor, lines, failures):
    if lse is None or lse.dtype != torch.float32 or lse.shape != ref_lse.shape:
        failures.append(f"lse: expected float32 {tuple(ref_lse.shape)}, got "
                        f"{None if lse is None else (lse.dtype, tuple(lse.shape))}")
        return
    check_finite("lse", lse, failures, allow_neginf=True)
    dead = torch.isneginf(ref_lse)
    if not torch.equal(torch.isneginf(lse), dead):
        failures.append("lse: the rows at -inf differ from the reference's")
        return
    live = ~dead
    compare("lse", lse[live], ref_lse[live], pt_lse.to(ref_lse.dtype)[live], factor,
            torch.float32, lines, failures)


# ---------------------------------------------------------------------------------------------
# One case, end to end
# ---------------------------------------------------------------------------------------------

def build(variant: str, s: Shape):
    m = VARIANTS[variant](s)
    attn = ae.compile(m.score_mod, m.mask_mod, normalize=m.normalize, scale=m.scale)
    return attn, m


def assert_kernel_backend(attn, q, k, v, what):
    backend = attn.backend_for(q, k, v)
    assert backend in KERNEL_BACKENDS, f"{what}: expected a fused kernel, got {backend!r}"
    return backend


def check_case(variant: str, s: Shape, dtype: torch.dtype, *, layout: str = "bhsd",
               lse_grad: bool = False, seed: int = 0):
    """Builds the variant, runs kernel / reference / pt forward and backward, compares.
    Returns (m, q, k, v, kernel result) for extra checks."""
    attn, m = build(variant, s)
    q, k, v = make_qkv(s, dtype, seed, layout)
    what = f"{variant} {dtype} {s} {layout}"
    backend = assert_kernel_backend(attn, q, k, v, what)
    dout, dlse = make_cotangents(s, dtype, seed + 1, lse=lse_grad)
    inputs_before = [x.detach().clone() for x in (q, k, v, *m.grads_of)]
    kern = run_kernel(attn, m, q, k, v, dout, dlse)
    for before, x in zip(inputs_before, (q, k, v, *m.grads_of)):
        assert torch.equal(before, x.detach()), f"{what}: the kernel wrote into an input"
    ref = run_reference(attn, m, q, k, v, dout, dlse, ref_dtype_for(s))
    pt = run_pt(m, q, k, v, dout, dlse)
    check_against_reference(kern, ref, pt, m, dtype, f"{what} [{backend}]")
    return m, q, k, v, kern


# ---------------------------------------------------------------------------------------------
# The matrix
# ---------------------------------------------------------------------------------------------

HEAD_DIMS = [(64, 64), (96, 96), (80, 80), (96, 64), (128, 128), (256, 256), (192, 128),
             (256, 128), (128, 256), (224, 224), (96, 256),  # the last two: wide and padded
             (192, 192), (64, 256), (256, 64)]  # padded to the next pair with a kernel
DTYPES = [BF16, FP16]


def _id(x):
    if isinstance(x, Shape):
        return f"B{x.B}H{x.Hq}-{x.Hkv}S{x.Sq}x{x.Skv}D{x.Dqk}-{x.Dv}"
    if isinstance(x, torch.dtype):
        return str(x).replace("torch.", "")
    if isinstance(x, tuple):
        return "x".join(map(str, x))
    return str(x)


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
@pytest.mark.parametrize("dims", HEAD_DIMS, ids=_id)
def test_head_dims_causal(dims, dtype):
    check_case("causal", Shape(Dqk=dims[0], Dv=dims[1]), dtype)


@pytest.mark.parametrize("dims", HEAD_DIMS, ids=_id)
def test_head_dims_plain(dims):
    check_case("plain", Shape(Dqk=dims[0], Dv=dims[1]), BF16)


VARIANTS_BF16 = ["plain", "causal", "sliding_window", "alibi_causal", "softcap",
                 "relative_bias", "document", "sigmoid", "relu_squared"]
VARIANTS_FP16 = ["plain", "alibi_causal", "softcap", "relative_bias", "sigmoid"]


@pytest.mark.parametrize("variant,dtype", [(v, BF16) for v in VARIANTS_BF16]
                         + [(v, FP16) for v in VARIANTS_FP16], ids=_id)
def test_variants(variant, dtype):
    check_case(variant, Shape(), dtype)


def _is_hopper() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("dims", HEAD_DIMS, ids=_id)
def test_hopper_picks_the_sm90_templates(dims, backward):
    """On sm_90 the TMA + wgmma forward and backward run at every head dim of the matrix:
    multiples of 64 with Dqk + Dv <= 320, 256 / 256, 256 / 128, 128 / 256 (wide), D96 on the
    D128 kernels and 192 / 192, 64 / 256, 256 / 64 on the next pair that has one (padded)."""
    if not _is_hopper():
        pytest.skip("needs an sm_90 GPU")
    s = Shape(Dqk=dims[0], Dv=dims[1])
    attn, _ = build("causal", s)
    q, k, v = make_qkv(s, BF16, 0, "bhsd")
    assert attn.backend_for(q, k, v, backward=backward) == "sm90"


# The sm90 backward past 128 columns of dK + dV (sm90/bwd.h: S^T and dP^T in two parts of 32
# queries, dQ in 64-column chunks split in halves, alternating between two tiles) and at unequal head dims.
SM90_BWD_WIDE = [
    ("plain", Shape(Dqk=192, Dv=128), BF16),
    ("causal", Shape(B=1, Hq=8, Hkv=2, Sq=1500, Skv=1100, Dqk=192, Dv=128), BF16),  # GQA 4:1
    ("document", Shape(Sq=2048, Skv=2048, Dqk=192, Dv=128), BF16),
    ("alibi_causal", Shape(Sq=17, Skv=17, Dqk=192, Dv=128), FP16),
    ("softcap", Shape(Dqk=192, Dv=128), BF16),
    ("sigmoid", Shape(Sq=777, Skv=300, Dqk=192, Dv=128), BF16),
    ("causal", Shape(Dqk=128, Dv=64), BF16),
    ("sliding_window", Shape(Dqk=64, Dv=128), FP16),
    ("plain", Shape(Dqk=192, Dv=64), BF16),
]


@pytest.mark.parametrize("variant,s,dtype", SM90_BWD_WIDE, ids=_id)
def test_sm90_backward_wide_and_unequal_head_dims(variant, s, dtype):
    if not _is_hopper():
        pytest.skip("needs an sm_90 GPU")
    attn, _ = build(variant, s)
    q, k, v = make_qkv(s, dtype, 0, "bhsd")
    assert attn.backend_for(q, k, v, backward=True) == "sm90"
    check_case(variant, s, dtype)


# (96 and 256 run the sm90 kernels by default since 2026-12-04: these keep the sm80 ones tested)
@pytest.mark.parametrize("dims", [(128, 128), (64, 64), (96, 96), (256, 256)], ids=_id)
@pytest.mark.parametrize("variant", ["plain", "causal", "alibi_causal", "relative_bias",
                                     "sigmoid", "document"])
def test_sm80_backward_on_hopper(variant, dims, monkeypatch):
    """The mma.sync backward stays correct on Hopper (AE_DISABLE_SM90_BWD=1 selects it)."""
    _check_sm80_on_hopper(variant, dims, "AE_DISABLE_SM90_BWD", True, monkeypatch)


def _check_sm80_on_hopper(variant, dims, switch, backward, monkeypatch):
    """check_case with the environment variable `switch` set, after asserting that the
    forward (or the backward) then runs the sm80 template."""
    if not _is_hopper():
        pytest.skip("needs an sm_90 GPU")
    monkeypatch.setenv(switch, "1")
    s = Shape(Dqk=dims[0], Dv=dims[1])
    attn, _ = build(variant, s)
    q, k, v = make_qkv(s, BF16, 0, "bhsd")
    assert attn.backend_for(q, k, v, backward=backward) == "sm80"
    check_case(variant, s, BF16)


@pytest.mark.parametrize("dims", [(128, 128), (64, 64), (96, 96)], ids=_id)
@pytest.mark.parametrize("variant", ["plain", "causal", "sliding_window", "alibi_causal", "softcap",
                                     "sigmoid", "document"])
def test_sm80_forward_on_hopper(variant, dims, monkeypatch):
    """The mma.sync forward stays correct on Hopper (AE_DISABLE_SM90=1 selects it); at D64 it
    takes 96-key tiles, so 1000 keys end in a partial one."""
    _check_sm80_on_hopper(variant, dims, "AE_DISABLE_SM90", False, monkeypatch)


@pytest.mark.parametrize("sm90", [True, False], ids=["default", "sm80_forward"])
@pytest.mark.parametrize("variant", ["plain_scale_0.3", "causal_scale_-0.05"])
def test_softmax_scale(variant, sm90, monkeypatch):
    if not sm90:
        monkeypatch.setenv("AE_DISABLE_SM90", "1")
    check_case(variant, Shape(Sq=300, Skv=300), BF16)


@pytest.mark.parametrize("forward", ["sm90", "sm80"])
@pytest.mark.parametrize("mode", ["0", "1", "2"])
@pytest.mark.parametrize("variant,s", [
    ("document", Shape(B=1, Hq=4, Hkv=4, Sq=1000, Skv=1000)),
    ("document_keys", Shape(B=2, Hq=2, Hkv=2, Sq=1000, Skv=1000)),
    ("masked_rows", Shape(B=1, Hq=4, Hkv=4, Sq=700, Skv=700)),
], ids=_id)
def test_mask_loads(variant, s, mode, forward, monkeypatch):
    """The forwards' mask loads per score (AE_MASK_LOADS=0), once per row (1), once per row
    and column (2) give the same answers (templates/nvidia/mma_rows.h MaskLoads)."""
    if forward == "sm80":
        monkeypatch.setenv("AE_DISABLE_SM90", "1")
    elif not _is_hopper():
        pytest.skip("needs an sm_90 GPU")
    monkeypatch.setenv("AE_MASK_LOADS", mode)
    check_case(variant, s, BF16)


@pytest.mark.parametrize("variant,dtype,dims", [
    ("alibi_causal", FP16, (64, 64)),
    ("sliding_window", BF16, (64, 64)),
    ("document", FP16, (96, 96)),
    ("softcap", BF16, (256, 256)),
    ("sigmoid", FP16, (256, 256)),
    ("relative_bias", BF16, (192, 128)),
    ("relu_squared", BF16, (192, 128)),
], ids=_id)
def test_variants_other_head_dims(variant, dtype, dims):
    check_case(variant, Shape(Dqk=dims[0], Dv=dims[1]), dtype)


@pytest.mark.parametrize("variant", ["plain", "causal"])
@pytest.mark.parametrize("S", [1, 17, 128, 1000, 4096])
def test_sequence_lengths(S, variant):
    s = Shape(B=1, Hq=2, Hkv=2) if S >= 4096 else Shape()
    check_case(variant, replace(s, Sq=S, Skv=S), BF16)


@pytest.mark.parametrize("variant,sq,skv", [
    (v, sq, skv) for sq, skv in [(113, 203), (203, 113), (1023, 1024), (1, 4096)]
    for v in ("plain", "causal", "alibi_causal")
] + [("causal_bottom_right", 113, 203), ("causal_bottom_right", 1, 4096)], ids=_id)
def test_unequal_lengths(variant, sq, skv):
    check_case(variant, Shape(Sq=sq, Skv=skv), BF16)


@pytest.mark.parametrize("variant,dtype,shape", [
    ("plain", BF16, Shape(Hq=8, Hkv=2)),
    ("causal", BF16, Shape(Hq=8, Hkv=2)),
    ("alibi_causal", BF16, Shape(Hq=8, Hkv=2)),
    ("relative_bias", BF16, Shape(Hq=8, Hkv=2)),
    ("causal", FP16, Shape(Hq=8, Hkv=2, Dqk=64, Dv=64)),
    ("causal_bottom_right", BF16, Shape(Hq=8, Hkv=2, Sq=1, Skv=4096)),
    # the backward's block walk: 35 query blocks of 64 per head (windows of 32 states, one
    # partly past the end), two query heads per CTA, empty blocks skipped within each
    ("causal", BF16, Shape(B=1, Hq=8, Hkv=2, Sq=2200, Skv=2200)),
    ("sliding_window", BF16, Shape(B=1, Hq=8, Hkv=2, Sq=2200, Skv=2200)),
], ids=_id)
def test_gqa_4_to_1(variant, dtype, shape):
    check_case(variant, shape, dtype)


@pytest.mark.parametrize("dims", [(128, 128), (64, 64)], ids=_id)
@pytest.mark.parametrize("bwd", ["default", "sm80_bwd"])
@pytest.mark.parametrize("sink", ["planned", "global"])
@pytest.mark.parametrize("variant", ["relative_bias", "relative_bias_large", "alibi_learned",
                                     "bias_and_slopes"])
def test_captured_tensor_gradients(variant, sink, bwd, dims, monkeypatch):
    """Gradients of captured tensors through both sinks (common/variant_support.h): the
    planner's choice (a shared-memory copy where the gradients fit next to the backward's
    tiles; global atomics for relative_bias_large on the sm90 backward) and global atomics
    forced by AE_GRAD_SINK=global; GQA, so that a CTA's walk crosses query heads (a per-head
    offset's register sum is added and restarted mid-CTA)."""
    if sink == "global":
        monkeypatch.setenv("AE_GRAD_SINK", "global")
    if bwd == "sm80_bwd":
        monkeypatch.setenv("AE_DISABLE_SM90_BWD", "1")
    s = Shape(Hq=8, Hkv=2, Dqk=dims[0], Dv=dims[1])
    attn, m = build(variant, s)
    if _is_hopper():  # the plan for this table on the H100 class (the H200's shared memory)
        grads = [t.requires_grad for t in attn.buffers]
        dtypes = [str(t.dtype).replace("torch.", "") for t in attn.buffers]
        family = "sm90" if bwd == "default" else "sm80"
        info = attn.variant.kernel_source("bwd", *dims, True, dtypes, family=family,
                                          buffer_grads=grads)
        shared = sink == "planned" and not (variant == "relative_bias_large" and family == "sm90")
        assert (" smem" in info["describe"]) == shared, info["describe"]
    check_case(variant, s, BF16)


@pytest.mark.parametrize("sm90", [True, False], ids=["default", "sm80_forward"])
@pytest.mark.parametrize("group", ["1", "4"])
def test_head_groups(group, sm90, monkeypatch):
    """The forward's CTA order (common/tile_scheduler.h) with 6 heads: in groups of 4 the last
    group has 2, and every (block, head, batch) must still be computed exactly once."""
    monkeypatch.setenv("AE_HEAD_GROUP", group)
    if not sm90:
        monkeypatch.setenv("AE_DISABLE_SM90", "1")
    check_case("causal", Shape(B=2, Hq=6, Hkv=3, Sq=700, Skv=700), BF16)


SPLIT_CASES = [  # (variant, shape): decode shapes, a speculative Sq, a prefill-sized one
    ("plain", Shape(B=2, Hq=8, Hkv=2, Sq=1, Skv=4097)),
    ("causal_bottom_right", Shape(B=1, Hq=8, Hkv=2, Sq=4, Skv=1000)),
    ("alibi_causal", Shape(B=2, Hq=4, Hkv=4, Sq=64, Skv=1000)),
    ("sliding_window", Shape(B=1, Hq=4, Hkv=1, Sq=17, Skv=1000)),
    ("relative_bias", Shape(B=1, Hq=4, Hkv=4, Sq=1, Skv=1000)),
    ("document", Shape(B=1, Hq=4, Hkv=4, Sq=1000, Skv=1000)),
    ("sigmoid", Shape(B=1, Hq=4, Hkv=2, Sq=4, Skv=1000)),
    ("masked_rows", Shape(B=1, Hq=4, Hkv=4, Sq=300, Skv=300)),
    ("causal", Shape(B=1, Hq=4, Hkv=2, Sq=64, Skv=1000, Dqk=96, Dv=96)),  # padded on sm90
]


@pytest.mark.parametrize("sm90", [True, False], ids=["default", "sm80_forward"])
@pytest.mark.parametrize("splits", ["1", "2", "1000"], ids=["1", "2", "max"])
@pytest.mark.parametrize("variant,shape", SPLIT_CASES, ids=_id)
def test_split_kv(variant, shape, splits, sm90, monkeypatch):
    """The split-KV forward (AE_KV_SPLITS: none, 2 ranges, one key block per range) and its
    combine: ranges with nothing kept, dead rows and heads, normalize="none" (a plain sum)."""
    monkeypatch.setenv("AE_KV_SPLITS", splits)
    if not sm90:
        monkeypatch.setenv("AE_DISABLE_SM90", "1")
    check_case(variant, shape, BF16)


DECODE_CASES = [  # (variant, shape): forwards of 16 query rows or fewer (sm80/decode.h)
    ("plain", Shape(B=3, Hq=8, Hkv=8, Sq=1, Skv=777)),
    ("causal_bottom_right", Shape(B=2, Hq=8, Hkv=2, Sq=16, Skv=1000)),
    ("alibi_causal", Shape(B=1, Hq=4, Hkv=4, Sq=5, Skv=300)),
    ("relative_bias", Shape(B=1, Hq=4, Hkv=2, Sq=3, Skv=513)),
    ("document", Shape(B=1, Hq=4, Hkv=4, Sq=7, Skv=1000)),
    ("sigmoid", Shape(B=2, Hq=4, Hkv=1, Sq=2, Skv=1000)),
    ("masked_rows", Shape(B=1, Hq=4, Hkv=4, Sq=9, Skv=129)),
    ("plain", Shape(B=1, Hq=4, Hkv=2, Sq=1, Skv=2049, Dqk=64, Dv=64)),
    ("causal_bottom_right", Shape(B=1, Hq=4, Hkv=4, Sq=4, Skv=700, Dqk=256, Dv=256)),
    ("plain", Shape(B=1, Hq=4, Hkv=4, Sq=2, Skv=600, Dqk=192, Dv=128)),
]


@pytest.mark.parametrize("tiles", ["1", "64,2", "128,8"])
@pytest.mark.parametrize("variant,shape", DECODE_CASES, ids=_id)
def test_decode_template(variant, shape, tiles, monkeypatch):
    """AE_DECODE turns on the decode template for forwards of at most 16 query rows (its warps
    split each key block and merge through shared memory): whole and split into key ranges,
    with its tiles as the table has them ("1") and as AE_DECODE sets them (2 warps of 32
    keys, 8 of 16)."""
    monkeypatch.setenv("AE_DECODE", tiles)
    check_case(variant, shape, BF16)
    monkeypatch.setenv("AE_KV_SPLITS", "3")
    check_case(variant, shape, BF16)


PERSISTENT_CASES = [  # (variant, shape): more tiles than the few CTAs of AE_PERSISTENT
    ("plain", Shape()),
    ("causal", Shape(B=1, Hq=4, Hkv=1, Sq=1500, Skv=1100)),
    ("document", Shape()),
    ("masked_rows", Shape(B=1, Hq=4, Hkv=4, Sq=700, Skv=700)),
    ("masked_rows_none", Shape(B=1, Hq=4, Hkv=4, Sq=700, Skv=700)),
    ("alibi_causal", Shape(Dqk=64, Dv=64)),
    ("sliding_window", Shape(B=1, Hq=3, Hkv=3, Sq=1000, Skv=1000, Dqk=256, Dv=256)),
    ("sigmoid", Shape(B=3, Hq=2, Hkv=2, Sq=777, Skv=300)),
    ("causal", Shape(B=1, Hq=4, Hkv=2, Sq=1000, Skv=1000, Dqk=192, Dv=128)),
    ("relative_bias", Shape(B=1, Hq=4, Hkv=4, Sq=1000, Skv=1000)),
]


@pytest.mark.parametrize("ctas", ["3", "7"])
@pytest.mark.parametrize("variant,shape", PERSISTENT_CASES, ids=_id)
def test_persistent_forward(variant, shape, ctas, monkeypatch):
    """The persistent sm90 forward (common/tile_scheduler.h PersistentTiles) with a few CTAs
    that each take many tiles (rows that keep nothing, tiles without keys, a tile's tail, every
    head dim family): against the reference, and bit for bit the output of a CTA per tile
    (AE_PERSISTENT=0)."""
    if not _is_hopper():
        pytest.skip("the persistent forward is the sm90 template's")
    monkeypatch.setenv("AE_PERSISTENT", ctas)
    monkeypatch.setenv("AE_KV_SPLITS", "1")  # (few tiles would split the keys instead)
    attn, m = build(variant, shape)
    # The planner's rule (csrc/plan/planner.cc persistent_ctas): more tiles than CTAs
    assert math.ceil(shape.Sq / 128) * shape.Hq * shape.B > int(ctas)
    assert " pers" in attn.variant.kernel_source("fwd", shape.Dqk, shape.Dv, True, [
        str(t.dtype).replace("torch.", "") for t in attn.buffers], family="sm90",
        q_len=shape.Sq)["describe"]
    _, q, k, v, kern = check_case(variant, shape, BF16)
    softmax = m.normalize == "softmax"

    def forward():
        with torch.no_grad():
            return attn(q, k, v, return_lse=True) if softmax else (attn(q, k, v), None)
    again = forward()  # the tile counter starts from zero on every call
    monkeypatch.setenv("AE_PERSISTENT", "0")
    grid = forward()
    for name, a, b in (("out", again[0], kern.out), ("out", grid[0], kern.out),
                       ("lse", again[1], kern.lse), ("lse", grid[1], kern.lse)):
        assert (a is None) == (b is None) and (a is None or torch.equal(a, b)), \
            f"{variant} {shape}: {name} differs between calls or from a CTA per tile"


@pytest.mark.parametrize("variant", ["causal", "relative_bias"])
def test_fills_the_gpu(variant):
    """B * H = 128 (query tiles x heads x batch well above the SM count)."""
    check_case(variant, Shape(B=4, Hq=32, Hkv=32, Sq=1024, Skv=1024), BF16)


@pytest.mark.parametrize("variant,dtype,dims", [
    ("masked_rows", BF16, (128, 128)),
    ("masked_rows", FP16, (64, 64)),
    ("masked_rows_none", BF16, (128, 128)),
], ids=_id)
def test_fully_masked_rows(variant, dtype, dims):
    s = Shape(Sq=300, Skv=300, Dqk=dims[0], Dv=dims[1])
    m, q, k, v, kern = check_case(variant, s, dtype)
    keep = keep_mask(m, s.B, s.Hq, s.Sq, s.Skv, DEV)
    dead_rows = ~keep.any(-1)           # [B, H, Sq]
    dead_keys = ~keep.any(-2)           # [B, H, Skv]; Hq == Hkv here
    assert dead_rows.any() and dead_keys.any()
    assert (kern.out[dead_rows] == 0).all(), "out of fully masked rows must be exactly 0"
    if kern.lse is not None:
        assert torch.isneginf(kern.lse[dead_rows]).all(), "lse of fully masked rows: -inf"
        assert torch.isfinite(kern.lse[~dead_rows]).all()
    assert (kern.grads["dq"][dead_rows] == 0).all(), "dq of fully masked rows must be 0"
    assert (kern.grads["dk"][dead_keys] == 0).all(), "dk of keys no query keeps must be 0"
    assert (kern.grads["dv"][dead_keys] == 0).all(), "dv of keys no query keeps must be 0"


# ---------------------------------------------------------------------------------------------
# The deterministic backward (common/dq_order.h)
# ---------------------------------------------------------------------------------------------

DETERMINISTIC_CASES = [
    ("plain", Shape(B=2, Hq=4, Hkv=2, Sq=2048, Skv=2048)),    # no table; GQA 2:1
    ("causal", Shape(B=2, Hq=4, Hkv=4, Sq=1500, Skv=1100)),   # the table; unequal lengths
    ("document", Shape(B=1, Hq=8, Hkv=2, Sq=2048, Skv=2048)),  # a sparse table; GQA 4:1
    ("plain", Shape(Sq=2048, Skv=2048, Dqk=64, Dv=64)),       # sm90: dQ halves in one tile
    ("sigmoid", Shape(Sq=1000, Skv=1000, Dqk=64, Dv=64)),     # normalize="none"
    # sm90: dQ in three 64-column chunks per block, the turn counted at the hand-over
    ("document", Shape(B=1, Hq=4, Hkv=2, Sq=2048, Skv=2048, Dqk=192, Dv=128)),
    ("causal", Shape(Sq=1500, Skv=1500, Dqk=192, Dv=64)),  # three chunks, one score part
    ("plain", Shape(Sq=1000, Skv=1000, Dqk=96, Dv=96)),  # sm90: D128's kernel, padded
    # sm90 wide: 64 keys per CTA, four chunks; GQA 2:1
    ("causal", Shape(B=1, Hq=4, Hkv=2, Sq=1500, Skv=1500, Dqk=256, Dv=256)),
]


def _grads(attn, q, k, v, dout):
    return torch.autograd.grad(attn(q, k, v), (q, k, v), dout)


@pytest.mark.parametrize("family", ["sm90", "sm80"])
@pytest.mark.parametrize("variant,s", DETERMINISTIC_CASES, ids=_id)
def test_deterministic_backward_repeats_bit_for_bit(variant, s, family, monkeypatch):
    """compile(deterministic=True): dq, dk, dv identical bit for bit over four backwards of
    the same inputs, and within the reference's bounds."""
    if family == "sm80":
        monkeypatch.setenv("AE_DISABLE_SM90_BWD", "1")
    m = VARIANTS[variant](s)
    attn = ae.compile(m.score_mod, m.mask_mod, normalize=m.normalize, scale=m.scale,
                      deterministic=True)
    q, k, v = make_qkv(s, BF16)
    dout, _ = make_cotangents(s, BF16)
    backend = attn.backend_for(q, k, v, backward=True)
    if family == "sm90" and backend != "sm90":
        pytest.skip(f"the sm90 backward needs Hopper ({backend})")
    assert backend == family
    first = _grads(attn, q, k, v, dout)
    for run in range(3):
        again = _grads(attn, q, k, v, dout)
        for name, a, b in zip(("dq", "dk", "dv"), first, again):
            assert torch.equal(a, b), f"{name} differs in run {run + 2}"
    kern = run_kernel(attn, m, q, k, v, dout, None)
    for name, g in zip(("dq", "dk", "dv"), first):
        assert torch.equal(kern.grads[name], g), f"{name}: the LSE-returning call differs"
    ref = run_reference(attn, m, q, k, v, dout, None, ref_dtype_for(s))
    pt = run_pt(m, q, k, v, dout, None)
    check_against_reference(kern, ref, pt, m, BF16, f"deterministic {variant} {s} [{family}]")


def test_deterministic_algorithms_turn_on_the_deterministic_backward():
    """Under torch.use_deterministic_algorithms a variant compiled without deterministic=True
    runs the deterministic backward (no error, the same bits twice)."""
    attn = ae.compile(mask_mod=mods.causal)
    s = Shape(Sq=2048, Skv=2048)
    q, k, v = make_qkv(s, BF16)
    dout, _ = make_cotangents(s, BF16)
    try:
        torch.use_deterministic_algorithms(True)
        first = _grads(attn, q, k, v, dout)
        again = _grads(attn, q, k, v, dout)
    finally:
        torch.use_deterministic_algorithms(False)
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_deterministic_mode_refuses_captured_tensor_gradients():
    """The gradients of captured tensors are still atomics in no fixed order: with
    deterministic=True their backward raises and says what to do; under torch's flag it
    raises (warns with warn_only); with the tensor detached it runs."""
    s = Shape(Sq=256, Skv=256)
    q, k, v = make_qkv(s, BF16)
    table = torch.zeros(s.Hq, 2 * MAX_DISTANCE + 1, device=DEV, requires_grad=True)
    attn = ae.compile(mods.relative_bias(table, MAX_DISTANCE), deterministic=True)
    with pytest.raises(RuntimeError, match="deterministic=True"):
        attn(q, k, v).sum().backward()
    plain = ae.compile(mods.relative_bias(table, MAX_DISTANCE))
    try:
        torch.use_deterministic_algorithms(True)
        with pytest.raises(RuntimeError, match="captured tensors"):
            plain(q, k, v).sum().backward()
        torch.use_deterministic_algorithms(True, warn_only=True)
        with pytest.warns(UserWarning, match="captured tensors"):
            plain(q, k, v).sum().backward()
        assert table.grad is not None and torch.isfinite(table.grad).all()
    finally:
        torch.use_deterministic_algorithms(False)
    detached = ae.compile(mods.relative_bias(table.detach(), MAX_DISTANCE), deterministic=True)
    q.grad = None
    detached(q, k, v).sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_strided_inputs():
    """q, k, v as [B, S, H, D] tensors transposed to [B, H, S, D]."""
    s = Shape(Hq=8, Hkv=2)
    m, q, k, v, kern = check_case("causal", s, BF16, layout="bshd")
    assert not q.is_contiguous() and not k.is_contiguous() and not v.is_contiguous()
    for name, x in (("dq", q), ("dk", k), ("dv", v)):
        assert kern.grads[name].shape == x.shape


def test_lse_gradient():
    """Backward through both outputs: dout and dlse."""
    check_case("causal", Shape(Sq=300, Skv=300), BF16, lse_grad=True)


def test_strided_output_gradient():
    """dout as a [B, S, H, D] tensor transposed to [B, H, S, D] (the backward's row passes and
    main kernel read it in place): the gradients equal those for a contiguous copy, to the
    order of dQ's fp32 additions."""
    torch.manual_seed(3)
    B, H, S, D = 2, 4, 300, 128
    q, k, v = (torch.randn(B, H, S, D, device=DEV, dtype=BF16, requires_grad=True) for _ in range(3))
    dout = torch.randn(B, S, H, D, device=DEV, dtype=BF16).transpose(1, 2)
    assert not dout.is_contiguous()
    attn = ae.compile(mask_mod=mods.causal)
    grads = torch.autograd.grad(attn(q, k, v), (q, k, v), dout)
    ref = torch.autograd.grad(attn(q, k, v), (q, k, v), dout.contiguous())
    for name, g, r in zip(("dq", "dk", "dv"), grads, ref):
        assert torch.isfinite(g).all(), name
        err = (g.float() - r.float()).abs().max().item()
        assert err <= 1e-2 * r.float().abs().max().item(), f"{name}: {err}"


def test_captured_tensor_updated_in_place_is_read():
    """Captured tensors are read at every call: the kernel must not bake their values."""
    s = Shape(Sq=300, Skv=300)
    slopes = mods.alibi_slopes(s.Hq, device=DEV)
    m = Mods(mods.alibi(slopes), mods.causal)
    attn = ae.compile(m.score_mod, m.mask_mod)
    q, k, v = make_qkv(s, BF16)
    dout, _ = make_cotangents(s, BF16)
    before = run_kernel(attn, m, q, k, v, dout, None)
    with torch.no_grad():
        slopes.mul_(4.0)
    after = run_kernel(attn, m, q, k, v, dout, None)
    assert not torch.equal(before.out, after.out), "the new slopes were not read"
    ref = run_reference(attn, m, q, k, v, dout, None, torch.float64)
    pt = run_pt(m, q, k, v, dout, None)
    check_against_reference(after, ref, pt, m, BF16, "alibi after slopes *= 4")


def test_non_default_stream():
    """On a side stream, fed inputs that the side stream itself finishes writing after a
    delay: a kernel launched on any other stream reads the nan poison (or races)."""
    s = Shape(Sq=1000, Skv=1000)
    attn, m = build("causal", s)
    q, k, v = make_qkv(s, BF16, seed=3)
    dout, _ = make_cotangents(s, BF16, seed=4)
    expected = run_kernel(attn, m, q, k, v, dout, None)

    poisoned = [torch.full_like(x, float("nan")).detach() for x in (q, k, v)]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU time before the real values land
        for dst, src in zip(poisoned, (q, k, v)):
            dst.copy_(src.detach())
        qs, ks, vs = (x.requires_grad_() for x in poisoned)
        out, lse = attn(qs, ks, vs, return_lse=True)
        dq, dk, dv = torch.autograd.grad(out, (qs, ks, vs), dout)
        got = [t.detach().clone() for t in (out, lse, dq, dk, dv)]
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()

    assert torch.equal(got[0], expected.out), "out differs on a side stream"
    assert torch.equal(got[1], expected.lse), "lse differs on a side stream"
    for name, g in zip(("dq", "dk", "dv"), got[2:]):
        want = expected.grads[name]
        assert torch.isfinite(g).all(), f"{name}: non-finite on a side stream"
        # Backward may accumulate with atomics: allow a couple of bf16 ulps of the largest.
        diff = max_abs(g.float() - want.float())
        assert diff <= 2 ** -6 * max_abs(want.float()), f"{name} differs by {diff:.3e}"


def test_head_dim_512_falls_back_to_the_reference():
    s = Shape(B=1, Hq=2, Hkv=2, Sq=64, Skv=64, Dqk=512, Dv=512)
    attn, m = build("causal", s)
    q, k, v = make_qkv(s, BF16)
    backend = attn.backend_for(q, k, v)
    assert backend.startswith("reference"), backend
    dout, _ = make_cotangents(s, BF16)
    with pytest.warns(UserWarning):
        kern = run_kernel(attn, m, q, k, v, dout, None, expect_kernel=False)
    ref = run_reference(attn, m, q, k, v, dout, None, torch.float64)
    pt = run_pt(m, q, k, v, dout, None)
    check_against_reference(kern, ref, pt, m, BF16, f"causal {s} [{backend}]")
