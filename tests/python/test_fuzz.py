"""The fuzzer (issue 15): random score_mod / mask_mod expression trees (tests/python/fuzz_mods.py)
compiled by attention_engine and run through the reference executor, against the very same
Python functions evaluated by plain PyTorch in float64 (oracle() below): outputs, lse and the
gradients of q, k, v and of the learnable captured tensors, and again after an in-place
update of the captured tensors. A few of the same cases are compiled with NVRTC for sm_80 and
sm_90a, where a warning in the generated code fails.

The seed is random per run and printed with the counts ("fuzz: seed=... tried=... wrong=...");
AE_FUZZ_SEED replays a run, AE_FUZZ_CASES sets how many cases (default 300).
"""
from __future__ import annotations

import math
import os
import random
import re

import pytest
import torch

import attention_engine as ae
from conftest import rtc_available
from attention_engine import _C
from fuzz_mods import Case, Gen, captured, make_mods

SEED = int(os.environ.get("AE_FUZZ_SEED") or random.SystemRandom().randrange(1 << 31))
CASES = int(os.environ.get("AE_FUZZ_CASES") or 300)
SHAPE = dict(B=2, HQ=4, HKV=2, SQ=9, SKV=11, D=8)
RTOL = 1e-8


def log(record_property, line: str) -> None:
    """A line in pytest's summary (conftest.py), from worker processes too: the seed must reach
    CI's log."""
    record_property("log", line)


def mismatch(name: str, got: torch.Tensor, want: torch.Tensor, rtol: float = RTOL):
    """None when got matches want (nan where want is nan, same infinities), else a message."""
    if got.shape != want.shape:
        return f"{name}: shape {tuple(got.shape)} vs {tuple(want.shape)}"
    got, want = got.double(), want.double()
    nan_g, nan_w = torch.isnan(got), torch.isnan(want)
    if not torch.equal(nan_g, nan_w):
        return (f"{name}: nan at {int((nan_g & ~nan_w).sum())} positions where PyTorch has none, "
                f"a number at {int((nan_w & ~nan_g).sum())} where PyTorch has nan")
    inf_g, inf_w = torch.isinf(got), torch.isinf(want)
    if not torch.equal(inf_g, inf_w) or not torch.equal(got[inf_g], want[inf_w]):
        return f"{name}: infinities differ"
    fin = torch.isfinite(want)
    if fin.any():
        g, w = got[fin], want[fin]
        scale = max(w.abs().max().item(), 1.0)
        err = (g - w).abs().max().item()
        if err > rtol * scale:
            return f"{name}: max abs error {err:.3e} > {rtol:.0e} * {scale:.3e}"
    return None


def oracle(q, k, v, score_mod, mask_mod, normalize):
    """Plain PyTorch, float64, the README's semantics: score_mod(q k^T * scale) and mask_mod
    applied to broadcast index tensors; under softmax a position is kept where the mask keeps
    it and its score is above -inf, and a row with nothing kept gives 0 (conftest.oracle,
    plus rows that score_mod alone empties)."""
    B, HQ, SQ, D = q.shape
    group = HQ // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(D)
    b, h = torch.arange(B).view(B, 1, 1, 1), torch.arange(HQ).view(1, HQ, 1, 1)
    qi, ki = torch.arange(SQ).view(1, 1, SQ, 1), torch.arange(k.shape[2]).view(1, 1, 1, -1)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # int * float in the mods: float64, as the graph
    try:
        if score_mod is not None:
            s = torch.as_tensor(score_mod(s, b, h, qi, ki), dtype=q.dtype).expand(s.shape)
        keep = torch.ones_like(s, dtype=torch.bool)
        if mask_mod is not None:
            keep = torch.as_tensor(mask_mod(b, h, qi, ki)).expand(s.shape)
    finally:
        torch.set_default_dtype(default)
    if normalize == "none":
        return s.masked_fill(~keep, 0.0) @ v, None
    masked = s.masked_fill(~keep, float("-inf"))
    lse = torch.logsumexp(masked, -1)
    row_ok = (masked != float("-inf")).any(-1, keepdim=True)
    p = torch.softmax(torch.where(row_ok, masked, torch.zeros_like(s)), -1) * row_ok
    return p @ v, lse


def unstable(q, k, v, score_mod, mask_mod, normalize, ref, ref_lse) -> bool:
    """Whether the oracle itself moves past the tolerance when q moves by a few parts in 1e12: a
    mod whose value turns on a score's last bits (a comparison at a threshold its own arithmetic
    lands on, as s % (|s| + 0.5) > 0.5 for negative s) cannot be checked to 1e-8 against an
    executor that sums q.k in another order."""
    with torch.no_grad():
        for eps in (1e-12, -1e-12, 3e-12, -3e-12):
            out, lse = oracle(q.detach() * (1 + eps), k.detach(), v.detach(), score_mod, mask_mod,
                              normalize)
            if mismatch("out", out, ref.detach()) or (
                    lse is not None and mismatch("lse", lse, ref_lse.detach(), rtol=1e-6)):
                return True
    return False


def run_case(case: Case, index: int):
    """Runs one case; returns the mismatch messages of its well-conditioned passes (empty: it
    agrees), whether a pass was ill-conditioned (unstable()), and the compiled attention. A case
    that reads captured tensors runs twice: the second time after an in-place update of them
    (an optimizer step), which a value frozen at trace time would miss."""
    gen = torch.Generator().manual_seed(SEED + index)
    env = captured(SHAPE["HQ"], gen)
    score_mod, mask_mod = make_mods(case, env)
    attn = ae.compile(score_mod, mask_mod, normalize=case.normalize)
    errors, ill = compare(attn, case, env, score_mod, mask_mod, gen)
    if any(name in case.score_src + case.mask_src for name in env):
        with torch.no_grad():
            for t in env.values():
                t.add_(3) if not t.is_floating_point() else t.mul_(-0.75).add_(0.25)
        again, ill_again = compare(attn, case, env, score_mod, mask_mod, gen)
        errors += [f"after an in-place update: {e}" for e in again]
        ill = ill or ill_again
    return errors, ill, attn


def compare(attn, case: Case, env: dict, score_mod, mask_mod, gen: torch.Generator):
    B, HQ, HKV, SQ, SKV, D = (SHAPE[k] for k in ("B", "HQ", "HKV", "SQ", "SKV", "D"))
    q = torch.randn(B, HQ, SQ, D, dtype=torch.float64, generator=gen).requires_grad_(True)
    k = torch.randn(B, HKV, SKV, D, dtype=torch.float64, generator=gen).requires_grad_(True)
    v = torch.randn(B, HKV, SKV, D, dtype=torch.float64, generator=gen).requires_grad_(True)
    softmax = case.normalize == "softmax"
    out, lse = attn(q, k, v, return_lse=True) if softmax else (attn(q, k, v), None)
    ref, ref_lse = oracle(q, k, v, score_mod, mask_mod, normalize=case.normalize)
    errors = [mismatch("out", out, ref)]
    if softmax:
        errors.append(mismatch("lse", lse, ref_lse.float(), rtol=1e-6))
    learnable = [t for t in env.values() if t.requires_grad]
    inputs = [q, k, v] + learnable
    dout = torch.randn(out.shape, dtype=out.dtype, generator=gen)
    got = torch.autograd.grad(out, inputs, dout, materialize_grads=True, allow_unused=True)
    want = torch.autograd.grad(ref, inputs, dout, materialize_grads=True, allow_unused=True)
    names = ["dq", "dk", "dv"] + [f"d {n}" for n, t in env.items() if t.requires_grad]
    errors += [mismatch(n, a, b, rtol=1e-7) for n, a, b in zip(names, got, want)]
    errors = [e for e in errors if e]
    if errors and unstable(q, k, v, score_mod, mask_mod, case.normalize, ref, ref_lse):
        return [], True  # this pass cannot be checked; (errors, ill-conditioned)
    return errors, False


def describe(case: Case, index: int) -> str:
    return (f"case {index} (AE_FUZZ_SEED={SEED}): normalize={case.normalize!r}\n"
            f"  score_mod: {case.score_src or None}\n  mask_mod:  {case.mask_src or None}")


def cases(n: int):
    g = Gen(random.Random(SEED))
    return [g.case() for _ in range(n)]


def test_fuzzed_mods_agree_with_pytorch(record_property):
    wrong, ill, failures = 0, 0, []
    all_cases = cases(CASES)
    for i, case in enumerate(all_cases):
        try:
            errors, ill_conditioned, _ = run_case(case, i)
        except Exception as e:  # noqa: BLE001  (a crash is a wrong answer too)
            errors, ill_conditioned = [f"raised {type(e).__name__}: {e}"], False
        ill += ill_conditioned and not errors  # its oracle's answer is not defined to 1e-8
        if errors:
            wrong += 1
            if len(failures) < 5:
                failures.append(describe(case, i) + "\n  " + "\n  ".join(errors))
    log(record_property, f"fuzz: seed={SEED} tried={len(all_cases)} wrong={wrong} "
                         f"ill-conditioned={ill}")
    assert wrong == 0, f"{wrong} of {len(all_cases)} cases disagree:\n" + "\n".join(failures)
    assert ill <= len(all_cases) // 20, f"{ill} ill-conditioned cases: the generator's fault"


NVRTC_CASES = 2  # each compiles 3 kernels (about 1-5 s each on the CI machine)


@pytest.mark.skipif(not rtc_available("sm_80"), reason="NVRTC not available")
def test_fuzzed_mods_compile_without_warnings(record_property):
    picked = [c for c in cases(40) if c.score_src and c.normalize == "softmax"][:NVRTC_CASES]
    assert len(picked) == NVRTC_CASES
    problems = []
    for i, case in enumerate(picked):
        env = captured(SHAPE["HQ"], torch.Generator().manual_seed(SEED + 10_000 + i))
        attn = ae.compile(*make_mods(case, env), normalize=case.normalize)
        dtypes = [str(t.dtype).replace("torch.", "") for t in attn.buffers]
        grads = [t.requires_grad for t in attn.buffers]
        for kind, arch in (("fwd", "sm_80"), ("bwd", "sm_90a"), ("fwd90", "sm_90a")):
            step, family = {"fwd": ("fwd", "sm80"), "fwd90": ("fwd", "sm90")}.get(kind, (kind, ""))
            info = attn.variant.kernel_source(step, 64, 64, True, dtypes, family=family,
                                              buffer_grads=grads if kind == "bwd" else [])
            (report,) = _C.jit_check_arches(info["source"], info["entry"], arches=[arch],
                                            options=info["options"])
            # Warnings in the generated code or from ptxas; the template headers' own are
            # tests/python/test_nvrtc_warnings.py's business.
            warnings = [ln for ln in report["log"].splitlines() if not ln.startswith("Remark")
                        if re.search(r"\bwarning\b", ln, re.IGNORECASE)
                        and not re.match(r"\s*(common|nvidia|sm80|sm90|gfx90a)/[\w.]+\(\d+\)", ln)]
            if not report["ok"] or warnings:
                problems.append(f"{describe(case, i)}\n  {kind} {arch}: "
                                f"{report['error'] or warnings[:5]}")
    log(record_property, f"fuzz nvrtc: seed={SEED} compiled={NVRTC_CASES * 3} problems={len(problems)}")
    assert not problems, "\n".join(problems)


def test_ill_conditioned_cases_are_told_apart():
    """unstable() flags a mod whose answer turns on a score's last bits, and not a smooth one
    (else it could hide a wrong answer)."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, 8, dtype=torch.float64, generator=gen) for _ in range(3))

    def smooth(s, b, h, qi, ki):
        return torch.tanh(s) * 3.0

    def threshold(s, b, h, qi, ki):  # negative s: s % (|s| + 0.5) is 0.5 up to rounding
        return torch.where(s % (torch.abs(s) + 0.5) > 0.5, s, torch.full_like(s, -float("inf")))

    for mod, want in ((smooth, False), (threshold, True)):
        ref, lse = oracle(q, k, v, mod, None, "softmax")
        assert unstable(q, k, v, mod, None, "softmax", ref, lse) == want, mod.__name__
