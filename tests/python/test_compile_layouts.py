"""torch.compile over the op with non-contiguous q/k/v (issue 16, item 1): the Meta kernels
must give the strides the real kernels return, or a compiled training step fails with
"incorrect fake (aka meta) kernel". Every output is contiguous, whatever the inputs' layout."""
import pytest
import torch

import attention_engine as ae
from attention_engine import mods
from conftest import assert_close

B, S, H, D = 2, 31, 4, 16


class QKVBlock(torch.nn.Module):
    """The usual layout: one projection, then view + permute into q, k, v (each a strided view
    of the projection's output, not contiguous)."""

    def __init__(self, biased):
        super().__init__()
        self.qkv = torch.nn.Linear(H * D, 3 * H * D)
        self.out = torch.nn.Linear(H * D, H * D)
        if biased:
            self.table = torch.nn.Parameter(0.1 * torch.randn(H, 2 * 8 + 1))
            self.attn = ae.Attention(mods.relative_bias(self.table, 8), mods.causal)
        else:
            self.attn = ae.Attention(mask_mod=mods.causal)

    def forward(self, x):
        q, k, v = self.qkv(x).view(B, S, 3, H, D).permute(2, 0, 3, 1, 4)
        return self.out(self.attn(q, k, v).transpose(1, 2).reshape(B, S, H * D))


def train_step(model, x):
    out = model(x)
    loss = out.square().mean()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.xdist_group("torch_compile")  # with test_api.py's (the same inductor warm-up)
@pytest.mark.parametrize("biased", [False, True])
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_training_step_with_permuted_qkv(backend, biased):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = QKVBlock(biased)
    x = torch.randn(B, S, H * D)
    eager_loss, eager_grads = train_step(model, x)
    model.zero_grad()
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    # No compiled-graph caches: a graph compiled against another build's Meta kernels would
    # be reused (their keys do not cover a custom op's implementation).
    with torch._inductor.config.patch(force_disable_caches=True):
        loss, grads = train_step(compiled, x)
    assert_close(loss, eager_loss, 1e-5, "loss")
    assert len(grads) == 4 + biased  # qkv's and out's weights and biases, the table
    for g, e in zip(grads, eager_grads):
        assert_close(g, e, 1e-4, "grad")


def permuted(*shape):
    """A [B, H, S, D] view of a [B, S, H, D] tensor (the layout above)."""
    b, h, s, d = shape
    return torch.randn(b, s, h, d, dtype=torch.float64).permute(0, 2, 1, 3)


def meta_like(t):
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


@pytest.mark.parametrize("op", ["attention", "attention_reference"])
def test_meta_and_real_kernels_agree_on_layouts(op):
    """Forward and backward ops: the same sizes, strides and dtypes from the Meta kernel as
    from the real one, for permuted inputs and a transposed captured tensor."""
    table = torch.randn(2 * 4 + 1, H, dtype=torch.float64).t()  # [H, 9], not contiguous
    attn = ae.compile(mods.relative_bias(table, 4), mods.causal)
    q, k, v, dout = (permuted(B, H, S, D) for _ in range(4))
    fwd = getattr(torch.ops.attention_engine, op)
    bwd = getattr(torch.ops.attention_engine, op + "_backward")
    args = (q, k, v, [table], attn.key, 0.25)
    real = fwd(*args)
    fake = fwd(*[meta_like(a) if isinstance(a, torch.Tensor) else
                 [meta_like(t) for t in a] if isinstance(a, list) else a for a in args])
    bargs = (dout, None, q, k, v, real[0], real[1], [table], attn.key, 0.25, [True])
    real_b = bwd(*bargs)
    fake_b = bwd(*[meta_like(a) if isinstance(a, torch.Tensor) else
                   [meta_like(t) for t in a] if isinstance(a, list) and a and
                   isinstance(a[0], torch.Tensor) else a for a in bargs])
    flat_real = list(real) + list(real_b[:3]) + list(real_b[3])
    flat_fake = list(fake) + list(fake_b[:3]) + list(fake_b[3])
    for r, f in zip(flat_real, flat_fake):
        assert (r.shape, r.stride(), r.dtype) == (f.shape, f.stride(), f.dtype)
        assert r.is_contiguous()
