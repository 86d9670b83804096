"""The reference executor's numerics: shapes and corner cases, against the oracle in float64."""
import pytest
import torch

import attention_engine as ae
from attention_engine import mods
from conftest import assert_close, check_variant, oracle, rand_qkv


@pytest.mark.parametrize("hq,hkv", [(4, 4), (4, 2), (8, 2), (6, 1)])
def test_gqa(hq, hkv):
    check_variant(score_mod=mods.softcap(3.0), HQ=hq, HKV=hkv)


def test_head_dims_differ():
    check_variant(mask_mod=mods.causal, DQK=24, DV=8, SQ=30, SKV=30)


@pytest.mark.parametrize("sq,skv", [(1, 50), (50, 1), (17, 128), (128, 17)])
def test_lengths_differ(sq, skv):
    check_variant(score_mod=lambda s, b, h, q, k: s - (q - k).abs() * 0.05, SQ=sq, SKV=skv)


def test_explicit_scale():
    check_variant(score_mod=mods.softcap(5.0), scale=0.7)


def test_fully_masked_rows_give_zero_output_and_gradients():
    # rows q < 5 see nothing at all
    mask = lambda b, h, q, k: (q >= 5) & (k <= q)  # noqa: E731
    attn, out = check_variant(mask_mod=mask, SQ=20, SKV=20)
    q, k, v = rand_qkv(SQ=20, SKV=20)
    out, lse = attn(q, k, v, return_lse=True)
    assert torch.all(out[:, :, :5] == 0)
    assert torch.all(torch.isneginf(lse[:, :, :5]))
    assert torch.isfinite(lse[:, :, 5:]).all()
    (out * torch.randn_like(out)).sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert torch.all(q.grad[:, :, :5] == 0)


def test_everything_masked():
    check_variant(mask_mod=lambda b, h, q, k: q < 0, SQ=8, SKV=8)


def test_score_mod_producing_minus_inf_acts_as_mask():
    mod = lambda s, b, h, q, k: torch.where(k > q, -float("inf"), s)  # noqa: E731
    check_variant(score_mod=mod, SQ=16, SKV=16)


def test_lse_gradient_flows():
    attn = ae.compile(mods.softcap(4.0), mods.causal)
    q, k, v = rand_qkv(SQ=12, SKV=12)
    out, lse = attn(q, k, v, return_lse=True)
    ref, ref_lse = oracle(q, k, v, mods.softcap(4.0), mods.causal)
    got = torch.autograd.grad(lse.double().sum() + out.sum(), (q, k))
    want = torch.autograd.grad(ref_lse.sum() + ref.sum(), (q, k))
    # lse is float32, so its gradient path is float32 accurate
    for a, b in zip(got, want):
        assert_close(a, b, 1e-5, "d(lse + out)")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_inputs_compute_in_float32(dtype):
    attn = ae.compile(mods.alibi(mods.alibi_slopes(4)), mods.causal)
    q, k, v = rand_qkv(SQ=24, SKV=24, dtype=torch.float64, requires_grad=False)
    ql, kl, vl = (t.to(dtype) for t in (q, k, v))
    out, lse = attn(ql, kl, vl, return_lse=True)
    assert out.dtype == dtype and lse.dtype == torch.float32
    ref, _ = oracle(ql.double(), kl.double(), vl.double(), mods.alibi(mods.alibi_slopes(4).double()),
                    mods.causal)
    tol = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 3e-3}[dtype]
    assert (out.double() - ref).abs().max().item() < tol


def test_non_contiguous_inputs():
    q, k, v = rand_qkv(SQ=20, SKV=20, requires_grad=False)
    qt = q.transpose(1, 2).contiguous().transpose(1, 2)  # [B, S, H, D] memory
    attn = ae.compile(mask_mod=mods.causal)
    assert_close(attn(qt, k, v), attn(q, k, v), 0.0, "strided q")


def test_buffer_values_read_at_call_time():
    slopes = torch.ones(4, dtype=torch.float64)
    attn = ae.compile(mods.alibi(slopes))
    q, k, v = rand_qkv(requires_grad=False)
    before = attn(q, k, v)
    slopes.mul_(3.0)
    after = attn(q, k, v)
    ref, _ = oracle(q, k, v, mods.alibi(slopes))
    assert not torch.allclose(before, after)
    assert_close(after, ref, 1e-10, "after in-place update")


@pytest.mark.parametrize("name", ["alibi_causal", "relative_bias", "none", "retention", "sink"])
def test_query_rows_in_chunks_equal_the_whole(name, monkeypatch):
    """Past a budget of scores the reference executor runs the query rows in chunks (q_idx
    offset, dK / dV and captured gradients summed): the same values and gradients."""
    torch.manual_seed(0)
    table = torch.randn(2, 33, dtype=torch.float64, requires_grad=True)
    sink = torch.randn(2, dtype=torch.float64, requires_grad=True)
    attn = {
        "alibi_causal": lambda: ae.compile(mods.alibi(mods.alibi_slopes(2)), mods.causal),
        "relative_bias": lambda: ae.compile(mods.relative_bias(table, 16)),
        "none": lambda: ae.compile(mods.sigmoid(-1.0), mods.causal, normalize="none"),
        "retention": lambda: ae.compile(mask_mod=lambda b, h, q, k: k < q,
                                        normalize=ae.normalizers.retention),
        "sink": lambda: ae.compile(mask_mod=mods.causal,
                                   normalize=ae.normalizers.softmax_with_sink(sink)),
    }[name]()
    q = torch.randn(2, 2, 13, 8, dtype=torch.float64)
    k, v = torch.randn(2, 1, 11, 8, dtype=torch.float64), torch.randn(2, 1, 11, 8, dtype=torch.float64)
    dout = torch.randn(2, 2, 13, 8, dtype=torch.float64)
    dstat = torch.randn(2, 2, 13, dtype=torch.float64)
    extra = [t for t in (table, sink) if any(t is b for b in attn.buffers)]

    def run():
        qq, kk, vv = (t.clone().requires_grad_(True) for t in (q, k, v))
        out, stat = attn(qq, kk, vv, return_lse=name != "none"), None
        if isinstance(out, tuple):
            out, stat = out
        loss = (out * dout).sum()
        if stat is not None:
            loss = loss + torch.where(torch.isfinite(stat), stat, 0.0).mul(dstat).sum()
        grads = torch.autograd.grad(loss, (qq, kk, vv, *extra))
        return [out] + ([stat] if stat is not None else []) + list(grads)

    whole = run()
    monkeypatch.setenv("AE_REFERENCE_MAX_SCORES", str(2 * 2 * 11 * 3))  # 3 rows per chunk
    chunked = run()
    for a, b in zip(whole, chunked):
        assert_close(b, a, 1e-12)
