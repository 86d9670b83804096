import atexit
import math
import os
import shutil
import tempfile
import warnings

import pytest
import torch

# Kernels the tests compile go to a temporary folder, never to the user's cache (set before
# any test imports attention_engine). AE_TEST_CACHE_DIR names a folder to keep instead (the
# GPU machine reuses one between runs).
if os.environ.get("AE_TEST_CACHE_DIR"):
    os.environ["AE_CACHE_DIR"] = os.environ["AE_TEST_CACHE_DIR"]
else:
    _CACHE = tempfile.mkdtemp(prefix="ae_test_kernels_")
    os.environ["AE_CACHE_DIR"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


def rtc_available(arch: str) -> bool:
    """Whether the run-time compiler for arch ("sm_80": NVRTC, "gfx90a": hipRTC) loads here."""
    from attention_engine import _C
    try:
        _C.jit_compiler_version(arch)
        return True
    except Exception:  # noqa: BLE001  (no libnvrtc / libamdhip64 on this machine)
        return False


def host_gxx():
    """The host's g++ where it is 12 or newer (_Float16 on x86-64: the emulators' builds,
    tests/emu), else None."""
    import shutil
    import subprocess
    gxx = shutil.which("g++")
    if not gxx:
        return None
    out = subprocess.run([gxx, "-dumpversion"], capture_output=True, text=True).stdout
    return gxx if int(out.split(".")[0] or 0) >= 12 else None


def pytest_terminal_summary(terminalreporter):
    """Lines the tests record as the "log" property (test_fuzz.py's seeds), at the end of the
    output: captured output of worker processes (pytest-xdist) never reaches it otherwise."""
    lines = [value for key in ("passed", "failed") for rep in terminalreporter.stats.get(key, [])
             if rep.when == "call" for name, value in rep.user_properties if name == "log"]
    if lines:
        terminalreporter.write_sep("-", "logged by the tests")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available() and not torch.version.hip:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    # On ROCm only the AMD family's GPU tests run (the others test the NVIDIA templates).
    amd = pytest.mark.skip(reason="an NVIDIA family's GPU test (on ROCm: amd_gpu tests)")
    for item in items:
        if "gpu" in item.keywords and not (torch.cuda.is_available() and "amd_gpu" in item.keywords):
            item.add_marker(amd if torch.cuda.is_available() else skip)


def pytest_collection_finish(session):
    """scripts/test.sh runs pytest-xdist with --dist loadgroup, which sends the tests of one
    xdist_group mark to one worker by a suffix on their node ids. Say so where they lack it (a
    pytest that pytest-xdist cannot mark ids in: the groups split, and their builds and
    warm-ups are paid once per worker)."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    lost = [item.nodeid for item in session.items
            if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if lost:
        warnings.warn(f"--dist loadgroup: {len(lost)} xdist_group tests without their group "
                      f"(e.g. {lost[0]}); see requirements-dev.txt")


def oracle(q, k, v, score_mod=None, mask_mod=None, scale=None, normalize="softmax"):
    """Attention written independently of attention_engine: the mods are applied to real
    broadcast index tensors, and torch autograd gives the reference gradients.
    Returns (out, lse)."""
    B, HQ, SQ, D = q.shape
    HKV, SKV = k.shape[1], k.shape[2]
    g = HQ // HKV
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    s = (q @ k.transpose(-1, -2)) * scale
    b = torch.arange(B).view(B, 1, 1, 1)
    h = torch.arange(HQ).view(1, HQ, 1, 1)
    qi = torch.arange(SQ).view(1, 1, SQ, 1)
    ki = torch.arange(SKV).view(1, 1, 1, SKV)
    # Integer -> float promotion inside the mods follows the default dtype: make it the
    # inputs' own, as attention_engine computes in it.
    default = torch.get_default_dtype()
    torch.set_default_dtype(q.dtype if q.dtype == torch.float64 else torch.float32)
    try:
        if score_mod is not None:
            s = torch.as_tensor(score_mod(s, b, h, qi, ki), dtype=q.dtype)
            s = s.expand(B, HQ, SQ, SKV)
        keep = None
        if mask_mod is not None:
            keep = torch.as_tensor(mask_mod(b, h, qi, ki)).expand(B, HQ, SQ, SKV)
    finally:
        torch.set_default_dtype(default)
    if normalize == "none":
        p = s if keep is None else s.masked_fill(~keep, 0.0)
        return p @ v, None
    if keep is None:
        keep = torch.ones_like(s, dtype=torch.bool)
    masked = s.masked_fill(~keep, float("-inf"))
    lse = torch.logsumexp(masked, -1)
    row_ok = keep.any(-1, keepdim=True)
    # Fully masked rows: a finite stand-in keeps softmax's gradient free of nan.
    p = torch.softmax(torch.where(row_ok, masked, torch.zeros_like(s)), -1) * row_ok
    return p @ v, lse


def rand_qkv(B=2, HQ=4, HKV=2, SQ=33, SKV=47, DQK=16, DV=16, dtype=torch.float64,
             requires_grad=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, HQ, SQ, DQK, dtype=dtype, generator=gen)
    k = torch.randn(B, HKV, SKV, DQK, dtype=dtype, generator=gen)
    v = torch.randn(B, HKV, SKV, DV, dtype=dtype, generator=gen)
    return [t.requires_grad_(requires_grad) for t in (q, k, v)]


def assert_close(a, b, tol=1e-10, what=""):
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
    assert not torch.isnan(a).any(), f"{what}: nan in result"
    err = (a - b).abs().max().item() if a.numel() else 0.0
    assert err <= tol, f"{what}: max abs error {err:.3e} > {tol:.1e}"


def check_variant(score_mod=None, mask_mod=None, normalize="softmax", scale=None, grads_of=(),
                  tol=1e-10, **shape):
    """Runs attention_engine.compile(...) forward and backward against the oracle in float64:
    out, lse, dq, dk, dv and the gradients of the tensors in `grads_of`."""
    import attention_engine as ae

    attn = ae.compile(score_mod, mask_mod, normalize=normalize, scale=scale)
    q, k, v = rand_qkv(**shape)
    gen = torch.Generator().manual_seed(1)
    if normalize == "softmax":
        out, lse = attn(q, k, v, return_lse=True)
    else:
        out, lse = attn(q, k, v), None
    ref, ref_lse = oracle(q, k, v, score_mod, mask_mod, scale, normalize)
    assert_close(out, ref, tol, "out")
    if lse is not None:
        assert lse.dtype == (torch.float64 if q.dtype == torch.float64 else torch.float32)
        assert torch.equal(torch.isneginf(lse), torch.isneginf(ref_lse)), "lse -inf rows differ"
        fin = torch.isfinite(ref_lse)
        assert_close(lse[fin].double(), ref_lse[fin], 1e-5, "lse")  # lse is float32
    dout = torch.randn(out.shape, dtype=out.dtype, generator=gen)
    inputs = (q, k, v) + tuple(grads_of)
    got = torch.autograd.grad(out, inputs, dout, materialize_grads=True)
    want = torch.autograd.grad(ref, inputs, dout, materialize_grads=True)
    for name, a, b in zip(["dq", "dk", "dv"] + [f"d buffer {i}" for i in range(len(grads_of))],
                          got, want):
        assert_close(a, b, tol, name)
    return attn, out
