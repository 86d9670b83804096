"""The fused kernels of custom row normalizations (templates/common/normalizers.h CustomLog /
CustomLinear; AE_CUSTOM_NORM=0 turns them off): out and the row
statistic against the reference executor on the same bf16 inputs (fp32 math), both families,
with masks that leave rows empty, partial blocks and GQA; the log-domain backward (softmax's
kernels with bwd_rows_custom's row terms) with a learnable sink. Every test is marked gpu.

    PYTHONPATH=python python -m pytest -q -rs tests/python/test_gpu_normalizers.py
"""
import pytest
import torch

import attention_engine as ae
from attention_engine import mods

pytestmark = pytest.mark.gpu

DEV = "cuda"


def _norms():
    gain = torch.linspace(0.5, 1.5, 4, device=DEV)
    shift = torch.linspace(0.0, 0.3, 4, device=DEV)
    gamma = 1 - 2.0 ** (-5 - torch.arange(4, device=DEV, dtype=torch.float32))
    learnable = ae.Normalizer(lambda x, b, h, q, k: torch.relu(x) * gain[h],
                              stat=lambda x, b, h, q, k: torch.abs(x) + shift[h],
                              finish=lambda L, b, h, q: 1.0 / (1.0 + L))
    return {
        # RetNet's parallel form: decay gamma[h] ** (q - k) on a causal mask
        "retention": (lambda s, b, h, q, k: s * gamma[h] ** (q - k).float(), mods.causal,
                      ae.normalizers.retention),
        "relu_normalized": (None, mods.sliding_window(100), ae.normalizers.relu_normalized),
        "sink": (mods.softcap(2.0), mods.causal,
                 ae.normalizers.softmax_with_sink(torch.linspace(-1, 1, 4, device=DEV))),
        "sink_plain": (None, None,
                       ae.normalizers.softmax_with_sink(torch.linspace(-1, 1, 4, device=DEV))),
        "learnable_linear": (None, lambda b, h, q, k: k < q, learnable),  # row 0 keeps nothing
        "detached_log": (None, lambda b, h, q, k: k < q,
                         ae.Normalizer(lambda x, b, h, q, k: x, log_domain=True,
                                       detach_stats=True)),
    }


NAMES = ["detached_log", "learnable_linear", "relu_normalized", "retention", "sink", "sink_plain"]


@pytest.mark.parametrize("family", ["sm90", "sm80"])
@pytest.mark.parametrize("dims", [(128, 128), (64, 64)], ids=lambda d: f"d{d[0]}")
@pytest.mark.parametrize("name", NAMES)
def test_custom_normalization_forward(name, dims, family, monkeypatch):
    monkeypatch.delenv("AE_CUSTOM_NORM", raising=False)
    if family == "sm80":
        monkeypatch.setenv("AE_DISABLE_SM90", "1")
    norms = _norms()
    assert sorted(norms) == NAMES
    score_mod, mask_mod, norm = norms[name]
    attn = ae.compile(score_mod, mask_mod, normalize=norm)
    torch.manual_seed(0)
    q = torch.randn(2, 4, 300, dims[0], device=DEV, dtype=torch.bfloat16)
    k = torch.randn(2, 2, 300, dims[0], device=DEV, dtype=torch.bfloat16)
    v = torch.randn(2, 2, 300, dims[1], device=DEV, dtype=torch.bfloat16)
    assert attn.backend_for(q, k, v).startswith(family)  # (its backward: the reference)
    out, stat = attn(q, k, v, return_lse=True)
    ref, ref_stat = attn.reference(q, k, v, return_lse=True)
    assert torch.isfinite(out).all()
    err = (out.float() - ref.float()).abs().max().item()
    assert err <= 2e-2 * ref.float().abs().max().item() + 1e-3, (name, err)
    finite = torch.isfinite(ref_stat)
    assert torch.equal(finite, torch.isfinite(stat)), "the statistic's -inf rows differ"
    assert torch.equal(stat[~finite], ref_stat[~finite])
    serr = (stat[finite] - ref_stat[finite]).abs().max().item()
    assert serr <= 1e-2 * ref_stat[finite].abs().max().item() + 1e-3, (name, serr)
    if mask_mod is not None and name in ("learnable_linear", "detached_log"):
        assert (out[:, :, 0] == 0).all(), "a row that keeps nothing gives exactly 0"


def test_custom_normalization_kernels_turn_off(monkeypatch):
    monkeypatch.setenv("AE_CUSTOM_NORM", "0")
    attn = ae.compile(mask_mod=mods.causal, normalize=ae.normalizers.retention)
    q = torch.randn(1, 4, 64, 64, device=DEV, dtype=torch.bfloat16)
    assert attn.backend_for(q, q, q).startswith("reference")


@pytest.mark.parametrize("family", ["sm90", "sm80"])
@pytest.mark.parametrize("name", ["learnable_sink", "detached_log", "sink_softcap", "retention",
                                  "relu_normalized", "learnable_linear", "inverse_l"])
def test_custom_normalization_backward(name, family, monkeypatch):
    """dq, dk, dv and the captured tensors' gradients (in the weight, the stat and the finish)
    with a loss on the returned statistic too, against the reference executor."""
    monkeypatch.delenv("AE_CUSTOM_NORM", raising=False)
    if family == "sm80":
        monkeypatch.setenv("AE_DISABLE_SM90", "1")
        monkeypatch.setenv("AE_DISABLE_SM90_BWD", "1")
    sink = torch.linspace(-1, 1, 4, device=DEV).requires_grad_(True)
    gain, shift, c = (torch.linspace(0.5, 1.5, 4, device=DEV).requires_grad_(True)
                      for _ in range(3))
    gamma = 1 - 2.0 ** (-5 - torch.arange(4, device=DEV, dtype=torch.float32))
    learnable = ae.Normalizer(lambda x, b, h, q, k: torch.relu(x) * gain[h],
                              stat=lambda x, b, h, q, k: torch.abs(x) + shift[h],
                              finish=lambda L, b, h, q: c[h] / (1.0 + L))
    score_mod, mask_mod, norm, captured = {
        "learnable_sink": (None, mods.causal, ae.normalizers.softmax_with_sink(sink), [sink]),
        "detached_log": (None, lambda b, h, q, k: k < q,
                         ae.Normalizer(lambda x, b, h, q, k: x, log_domain=True,
                                       detach_stats=True), []),
        "sink_softcap": (mods.softcap(2.0), mods.causal, ae.normalizers.softmax_with_sink(sink),
                         [sink]),
        "retention": (lambda s, b, h, q, k: s * gamma[h] ** (q - k).float(), mods.causal,
                      ae.normalizers.retention, []),
        "relu_normalized": (None, mods.sliding_window(100), ae.normalizers.relu_normalized, []),
        "learnable_linear": (None, lambda b, h, q, k: k < q, learnable, [gain, shift, c]),
        # c(0) = inf on the empty row 0: its finish gradient must stay finite (0 there)
        "inverse_l": (None, lambda b, h, q, k: k < q,
                      ae.Normalizer(lambda x, b, h, q, k: torch.exp(x),
                                    finish=lambda L, b, h, q: c[h] / L), [c]),
    }[name]
    attn = ae.compile(score_mod, mask_mod, normalize=norm)
    torch.manual_seed(0)
    q = torch.randn(2, 4, 300, 128, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(2, 2, 300, 128, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(2, 2, 300, 128, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    assert attn.backend_for(q, k, v, backward=True) == family
    dout = torch.randn_like(q)
    dstat = torch.randn(2, 4, 300, device=DEV)
    wants = [q, k, v] + captured

    def grads(fn):
        out, stat = fn(q, k, v, return_lse=True)
        loss = (out.float() * dout.float()).sum()
        loss = loss + torch.where(torch.isfinite(stat), stat, 0.0).mul(dstat).sum()
        return torch.autograd.grad(loss, wants, allow_unused=True, materialize_grads=True)

    got, want = grads(attn), grads(attn.reference)
    for i, (a, b) in enumerate(zip(got, want)):
        n = ["dq", "dk", "dv"][i] if i < 3 else f"d captured[{i - 3}]"
        assert torch.isfinite(a).all(), n
        err = (a.float() - b.float()).abs().max().item()
        assert err <= 3e-2 * b.float().abs().max().item() + 1e-3, (name, n, err)
