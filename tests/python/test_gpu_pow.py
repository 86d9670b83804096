"""torch.pow in generated kernels (ae::fpow in templates/common/variant_support.h, and the
multiplications for small integer constant exponents) against torch.pow on every pair of
special and ordinary values: zeros of both signs, negative bases with integer and fractional
exponents, infinities, NaN, huge and tiny magnitudes. Each score is read back exactly: q = k =
0 (the score is the score_mod's value alone), normalize="none" and V the identity, so
out[i, j] is score(i, j) rounded to bf16. Marked gpu.

    PYTHONPATH=python python -m pytest -q -rs tests/python/test_gpu_pow.py
"""
import math

import pytest
import torch

import attention_engine as ae

pytestmark = pytest.mark.gpu

DEV = "cuda"
INF, NAN = math.inf, math.nan
VALUES = [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 3.0, -3.0, 0.96875, 1e30, -1e30, 1e-30,
          INF, -INF, NAN, 1 / 3, 2.5, -2.5, 2.0 ** 24, 2.0 ** 25, -7.0, 100.0, -100.0, 200.0,
          0.999999, 16383.0]
NAN_CODE, CLAMP = 77.0, 50.0  # NaN and the clamp: values the bf16 output holds exactly


def _readable(p):
    """NaN to a code, the rest clamped: every outcome is finite and distinct enough."""
    return torch.clamp(torch.where(p != p, NAN_CODE, p), -CLAMP, CLAMP)


@pytest.fixture(params=["sm90", "sm80"])
def family(request, monkeypatch):
    if request.param == "sm80":
        monkeypatch.setenv("AE_DISABLE_SM90", "1")
    return request.param


def _read_scores(attn, n_q, n_kv, family):
    z = torch.zeros(1, 1, n_q, 64, device=DEV, dtype=torch.bfloat16)
    zk = torch.zeros(1, 1, n_kv, 64, device=DEV, dtype=torch.bfloat16)
    v = torch.eye(n_kv, 64, device=DEV, dtype=torch.bfloat16)[None, None]
    assert attn.backend_for(z, zk, v) == family
    return attn(z, zk, v)[0, 0, :, :n_kv].float()


def _check(got, want):
    want = want.to(torch.bfloat16).float()  # the kernel's P is bf16 before P @ V
    # one bf16 ulp (the kernel's fp32 value rounds either way); denormal results may flush
    tol = 2.0 ** -7 * want.abs() + 1e-37
    bad = ~((got - want).abs() <= tol)
    assert not bad.any(), (f"{int(bad.sum())} of {bad.numel()} differ, first at "
                           f"{bad.nonzero()[0].tolist()}: {got[bad][0]} vs {want[bad][0]}")


def test_pow_of_tensors_matches_torch(family):
    vals = torch.tensor(VALUES, device=DEV, dtype=torch.float32)
    n = len(VALUES)
    # exponent from the query's row, base from the key's column
    attn = ae.compile(lambda s, b, h, q_idx, kv_idx: s + _readable(vals[kv_idx] ** vals[q_idx]),
                      normalize="none")
    got = _read_scores(attn, n, n, family)
    want = _readable(vals[None, :] ** vals[:, None])
    _check(got, want)


@pytest.mark.parametrize("norm", ["none", "custom"])
@pytest.mark.parametrize("cast", [False, True], ids=["int", "float"])
def test_pow_by_integer_tensor_matches_torch(cast, norm, family):
    """An integer exponent (a distance, as RetNet's gamma ** (q - k)): ae::fpow, and in a
    custom normalization's kernels (here weight = x, no stat, no finish: P is x) ae::fpow_i."""
    vals = torch.tensor(VALUES, device=DEV, dtype=torch.float32)
    n, n_q = len(VALUES), 64
    shift = n_q // 2  # exponents -32 .. 31: odd and even, negative, zero

    def score_mod(s, b, h, q_idx, kv_idx):
        e = q_idx - shift
        return s + _readable(vals[kv_idx] ** (e.float() if cast else e))
    attn = ae.compile(score_mod, normalize="none" if norm == "none" else
                      ae.Normalizer(lambda x, b, h, q_idx, kv_idx: x))
    src = attn.variant.kernel_source("fwd", 64, 64, True, ["float32"], family=family)["source"]
    assert ("ae::fpow_i(" in src) == (norm == "custom")
    got = _read_scores(attn, n_q, n, family)
    e = torch.arange(n_q, device=DEV, dtype=torch.float32) - shift
    _check(got, _readable(vals[None, :] ** e[:, None]))


@pytest.mark.parametrize("exponent", [0, 1, 2, 3, 5, -1, -2, 2.0, -1.0, 0.5, 1.5, -0.5])
def test_pow_by_constant_matches_torch(exponent, family):
    vals = torch.tensor(VALUES, device=DEV, dtype=torch.float32)
    n = len(VALUES)
    attn = ae.compile(lambda s, b, h, q_idx, kv_idx: s + _readable(vals[kv_idx] ** exponent),
                      normalize="none")
    got = _read_scores(attn, 1, n, family)
    # (tensor ** tensor: torch's tensor ** scalar -0.5 is rsqrt, -inf at -0 where C's pow is inf)
    _check(got, _readable(vals ** torch.full_like(vals, exponent))[None, :])


def test_decay_pow_over_long_distances():
    """gamma ** (q - k) for a decay close to 1, as RetNet's heads: distances up to 4k."""
    gamma = torch.tensor([1 - 2.0 ** -12], device=DEV)
    attn = ae.compile(lambda s, b, h, q_idx, kv_idx: s + gamma[h] ** (q_idx - kv_idx).float(),
                      normalize="none")
    S = 4096
    z = torch.zeros(1, 1, S, 16, device=DEV, dtype=torch.bfloat16)
    v = torch.zeros(1, 1, S, 16, device=DEV, dtype=torch.bfloat16)
    v[..., 0] = 1  # out[i, 0] = sum over j of gamma ** (i - j)
    got = attn(z, z, v)[0, 0, :, 0].double()
    i = torch.arange(S, device=DEV, dtype=torch.float64)
    # every bf16-rounded term summed: the sum of the rounded powers in float64
    terms = (gamma.double() ** (i[:, None] - i[None, :])).to(torch.bfloat16).double()
    want = terms.sum(-1).to(torch.bfloat16).double()
    assert torch.allclose(got, want, rtol=2 ** -7, atol=0)
