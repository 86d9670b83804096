"""Public API: caching of compiled definitions, the nn.Module, torch.compile over it."""
import pytest
import torch

import attention_engine as ae
from attention_engine import api, mods
from conftest import assert_close, oracle, rand_qkv


def test_same_definition_twice_returns_cached_object():
    def mod(s, b, h, q, k):
        return s * 0.5 + (q - k) * 0.125

    first = ae.compile(mod, mods.causal)
    builds = api.build_count()
    again = ae.compile(mod, mods.causal)
    assert again is first
    assert api.build_count() == builds  # no second parse / differentiation in C++


def test_same_math_other_tensors_shares_the_variant():
    a, c = torch.randn(4), torch.randn(4)
    x = ae.compile(mods.alibi(a))
    y = ae.compile(mods.alibi(c))
    assert x is not y and x.key == y.key
    assert x.buffers[0] is a and y.buffers[0] is c


def test_changed_global_is_recompiled():
    global WINDOW
    WINDOW = 3
    first = ae.compile(mask_mod=lambda b, h, q, k: (q - k).abs() <= WINDOW)
    WINDOW = 5
    second = ae.compile(mask_mod=lambda b, h, q, k: (q - k).abs() <= WINDOW)
    assert first.key != second.key


def test_graph_texts_and_repr():
    attn = ae.compile(mods.softcap(10.0), mods.causal)
    assert "tanh" in attn.graph_text() and "out mask" in attn.graph_text()
    assert "d_score" in attn.backward_graph_text()
    assert "index-only" in attn.analysis()
    assert attn.key in repr(attn)


def test_module_forward_backward_with_learnable_bias():
    class Biased(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Parameter(torch.zeros(4, 9, dtype=torch.float64))
            self.attn = ae.Attention(score_mod=mods.relative_bias(self.table, 4),
                                     mask_mod=mods.causal)

        def forward(self, q, k, v):
            return self.attn(q, k, v)

    m = Biased()
    with torch.no_grad():
        m.table.normal_()
    q, k, v = rand_qkv(SQ=20, SKV=20)
    out = m(q, k, v)
    ref, _ = oracle(q, k, v, mods.relative_bias(m.table, 4), mods.causal)
    assert_close(out, ref, 1e-10, "module out")
    out.sum().backward()
    want = torch.autograd.grad(ref.sum(), m.table)[0]
    assert_close(m.table.grad, want, 1e-10, "table grad")
    assert "relative_bias_mod" in repr(m)


# In one xdist worker with test_compile_layouts.py's (--dist loadgroup, scripts/test.sh): the
# first inductor compile of a process costs about 25 s more than the next ones.
@pytest.mark.xdist_group("torch_compile")
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_over_module(backend):
    torch._dynamo.reset()
    slopes = mods.alibi_slopes(4)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(16, 16)
            self.attn = ae.Attention(mods.alibi(slopes), mods.causal)

        def forward(self, x):
            q = self.proj(x)
            return self.attn(q, x, x).sum(dim=-1)

    torch.manual_seed(0)
    block = Block()
    x = torch.randn(2, 4, 24, 16, requires_grad=True)
    eager = block(x)
    (gx,) = torch.autograd.grad(eager.sum(), x)
    compiled = torch.compile(block, backend=backend, fullgraph=True)
    out = compiled(x)
    (cgx,) = torch.autograd.grad(out.sum(), x)
    assert_close(out, eager, 1e-5, "compiled out")
    assert_close(cgx, gx, 1e-4, "compiled grad")


def test_meta_tensors_give_shapes():
    attn = ae.compile(mods.softcap(3.0))
    q = torch.empty(2, 8, 100, 64, device="meta")
    k = torch.empty(2, 2, 70, 64, device="meta")
    v = torch.empty(2, 2, 70, 32, device="meta")
    out, lse = attn(q, k, v, return_lse=True)
    assert out.shape == (2, 8, 100, 32) and out.device.type == "meta"
    assert lse.shape == (2, 8, 100) and lse.dtype == torch.float32


def test_version():
    assert ae.__version__.count(".") == 2


def test_deterministic_flag():
    """compile(deterministic=True): its own object (the flag reaches the backward), shown in
    repr, kept by pickling and by the module; a non-bool is a TypeError; on the CPU (the
    reference executor) the backward runs as usual."""
    import pickle
    plain = ae.compile(mask_mod=ae.mods.causal)
    det = ae.compile(mask_mod=ae.mods.causal, deterministic=True)
    assert det is not plain and det.deterministic and not plain.deterministic
    assert det is ae.compile(mask_mod=ae.mods.causal, deterministic=True)
    assert "deterministic=True" in repr(det) and "deterministic" not in repr(plain)
    assert pickle.loads(pickle.dumps(det)).deterministic
    with pytest.raises(TypeError, match="deterministic"):
        ae.compile(deterministic="yes")
    module = ae.Attention(mask_mod=ae.mods.causal, deterministic=True)
    assert "deterministic=True" in repr(module)
    q, k, v = (torch.randn(1, 2, 16, 8, requires_grad=True) for _ in range(3))
    torch.autograd.grad(det(q, k, v).sum(), (q, k, v))
    g_det = torch.autograd.grad(module(q, k, v).sum(), (q, k, v))
    g = torch.autograd.grad(plain(q, k, v).sum(), (q, k, v))
    for a, b in zip(g_det, g):
        torch.testing.assert_close(a, b)
