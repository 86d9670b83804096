"""Torch ops on captured tensors inside a mod (issue 15, defect 1): elementwise ones become part
of the graph (re-read at every call, differentiated), anything that would freeze a trace-time
value is a TraceError that says what to write."""
import pytest
import torch

import attention_engine as ae
from conftest import assert_close, check_variant, oracle, rand_qkv

F64 = torch.float64


def learnable(*shape, value=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    t = torch.randn(*shape, dtype=F64, generator=gen) if value is None else \
        torch.full(shape, value, dtype=F64)
    return t.requires_grad_(True)


def test_learnable_temperature_trains_for_several_steps():
    log_t = learnable(value=0.0)
    mod = lambda s, b, h, q, k: s * torch.exp(log_t)  # noqa: E731
    attn = ae.compile(mod)
    for step in range(3):
        q, k, v = rand_qkv(seed=step)
        out = attn(q, k, v)
        ref, _ = oracle(q, k, v, mod)
        assert_close(out, ref, 1e-10, f"out, step {step}")
        got = torch.autograd.grad(out.sum(), (q, log_t))
        want = torch.autograd.grad(ref.sum(), (q, log_t))
        assert_close(got[0], want[0], 1e-10, f"dq, step {step}")
        assert_close(got[1], want[1], 1e-10, f"d log_t, step {step}")
        assert got[1].abs().item() > 0
        with torch.no_grad():
            log_t += 0.5  # an optimizer step: the next call must see it
    assert [t is log_t for t in attn.buffers] == [True]


def test_in_place_update_of_a_scaled_tensor_is_seen():
    w = torch.tensor(1.0, dtype=F64)
    mod = lambda s, b, h, q, k: s * (w * 0.5)  # noqa: E731
    attn = ae.compile(mod)
    q, k, v = rand_qkv(requires_grad=False)
    before = attn(q, k, v)
    w.fill_(3.0)
    after = attn(q, k, v)
    assert_close(after, oracle(q, k, v, mod)[0], 1e-10, "after the update")
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("name", ["scaled_slopes", "tanh_table", "int_prefix", "broadcast",
                                  "where_on_tensors", "clamped", "cast", "rsub", "negative_int"])
def test_elementwise_expressions_over_captured_tensors(name):
    w = learnable(4, seed=1)
    a, c = learnable(4, 1, seed=2), learnable(1, 33, seed=3)
    table = learnable(3, 4, seed=4)
    ids = torch.tensor([0, 1, 1, 0])
    mods = {
        "scaled_slopes": (lambda s, b, h, q, k: s - (w * 0.5)[h] * (q - k).abs(), (w,)),
        "tanh_table": (lambda s, b, h, q, k: s + torch.tanh(w)[h], (w,)),
        "int_prefix": (lambda s, b, h, q, k: s + table[1][h], (table,)),
        "broadcast": (lambda s, b, h, q, k: s + (a * c)[h, q], (a, c)),
        "where_on_tensors": (lambda s, b, h, q, k: s + torch.where(w > 0, w, w * w)[h], (w,)),
        "clamped": (lambda s, b, h, q, k: s * torch.clamp(w, -0.5, 0.5)[h], (w,)),
        "cast": (lambda s, b, h, q, k: s + (ids.float() * 0.25)[h] + w[h], (w,)),
        "rsub": (lambda s, b, h, q, k: s * (1.0 - torch.sigmoid(w))[h], (w,)),
        "negative_int": (lambda s, b, h, q, k: s + table[-1][h], (table,)),
    }
    mod, grads_of = mods[name]
    attn, _ = check_variant(score_mod=mod, grads_of=grads_of)
    assert all(t.grad_fn is None for t in attn.buffers)  # leaves only: nothing frozen


def test_mask_over_a_captured_expression():
    doc = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2] * 4)
    check_variant(mask_mod=lambda b, h, q, k: (doc // 2)[q] == (doc // 2)[k], SQ=32, SKV=32)


def test_shape_queries_and_new_constants_are_fine():
    w = learnable(4, seed=5)
    check_variant(score_mod=lambda s, b, h, q, k: s + w[h % w.shape[0]] +
                  torch.tensor([0.5, -0.5], dtype=F64)[q % 2], grads_of=(w,))


@pytest.mark.parametrize("body,match", [
    (lambda w: lambda s, b, h, q, k: s + torch.softmax(w, 0)[h], r"'softmax' on a captured"),
    (lambda w: lambda s, b, h, q, k: s * w.sum(), r"'sum' on a captured"),
    (lambda w: lambda s, b, h, q, k: s * float(w[0]), r"'__float__' on a captured"),
    (lambda w: lambda s, b, h, q, k: s * w[0].item(), r"'item' on a captured"),
    (lambda w: lambda s, b, h, q, k: s + w.T[h], r"'\.T' on a captured"),
    (lambda w: lambda s, b, h, q, k: s + w[1:][h], "not slices"),
    (lambda w: lambda s, b, h, q, k: s + (w * 2)[h, q], "indexed with 2 indices"),
    (lambda w: lambda s, b, h, q, k: s + (w * 2), r"shape \[4\] is used without indexing"),
    (lambda w: lambda s, b, h, q, k: s + (w * 2)[7], "out of range"),
])
def test_ops_that_would_freeze_a_value_are_errors(body, match):
    w = learnable(4, seed=6)
    with pytest.raises((ae.TraceError, IndexError), match=match):
        ae.compile(body(w))


def test_in_place_update_inside_a_mod_is_refused_before_it_runs():
    w = torch.zeros(4, dtype=F64)
    with pytest.raises(ae.TraceError, match=r"'add_' on a captured tensor.*trace time"):
        ae.compile(lambda s, b, h, q, k: s + w.add_(1.0)[h])
    assert torch.equal(w, torch.zeros(4, dtype=F64))


def test_error_says_what_to_write():
    w = learnable(4)
    with pytest.raises(ae.TraceError) as e:
        ae.compile(lambda s, b, h, q, k: s + torch.softmax(w, 0)[h])
    text = str(e.value)
    assert "test_captured_ops.py" in text and "elementwise" in text and "outside the mod" in text
