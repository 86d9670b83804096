"""Autograd for the native ops (defined in csrc/torch/ops.cpp), registered once at import:
torch.ops.attention_engine.attention (fused kernels where a backend has one) and
attention_reference (always the reference executor), each with its *_backward op."""
import torch

from . import _C  # noqa: F401  (loads the library that defines the ops)

attention_op = torch.ops.attention_engine.attention
reference_op = torch.ops.attention_engine.attention_reference
paged_op = torch.ops.attention_engine.attention_paged  # forward only: no autograd
# Autograd: inference.py's (through attention_varlen_backward).
varlen_op = torch.ops.attention_engine.attention_varlen
# The gate-training forward (seer.attention_with_pooling): out, lse and the pooled map.
pooled_op = torch.ops.attention_engine.attention_pooled


def _setup_context(ctx, inputs, output):
    q, k, v, buffers, variant, scale, *rest = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, *buffers)
    ctx.variant = variant
    ctx.scale = scale
    ctx.deterministic = bool(rest[0]) if rest else False


def _make_backward(backward_op):
    def backward(ctx, dout, dlse):
        q, k, v, out, lse, *buffers = ctx.saved_tensors
        needs = ctx.needs_input_grad
        # needs_input_grad has one entry for the buffer list as a whole: ask each tensor.
        buffer_grads = [bool(b.requires_grad) for b in buffers]
        if dout is None:
            dout = torch.zeros_like(out)
        dq, dk, dv, dbuffers = backward_op(dout, dlse, q, k, v, out, lse, buffers, ctx.variant,
                                           ctx.scale, buffer_grads, ctx.deterministic)
        grads = [g if want else None for g, want in zip(dbuffers, buffer_grads)]
        # None for variant, scale and, where the call passed it (the dispatcher leaves out a
        # trailing argument at its default), deterministic: as many as the call's inputs.
        return (dq if needs[0] else None, dk if needs[1] else None, dv if needs[2] else None,
                grads) + (None,) * (len(needs) - 4)
    return backward


def _no_double_backward(ctx, *grads):
    raise RuntimeError(
        "attention_engine: gradients of gradients (double backward, e.g. a gradient penalty "
        "through the attention) are not supported; the first backward works with "
        "create_graph=True, differentiating its result does not")


def _nothing_to_save(ctx, inputs, output):
    pass


# The backward ops get an autograd kernel too: without one, a backward run with
# create_graph=True warns that the op has none (a deprecated fallback), and differentiating
# its result would be silently wrong. With it, that differentiation raises the error above.
for _name in ("attention_engine::attention_backward",
              "attention_engine::attention_reference_backward",
              "attention_engine::attention_varlen_backward"):
    torch.library.register_autograd(_name, _no_double_backward, setup_context=_nothing_to_save)


def _no_paged_backward(ctx, *grads):
    raise RuntimeError(
        "attention_engine: attention_paged (a paged KV cache read in place) has no backward; "
        "with_kvcache gathers the pages when a tensor of the call requires grad")


# The paged forward: an autograd kernel that refuses a backward (else gradients would be
# silently missing).
torch.library.register_autograd("attention_engine::attention_paged", _no_paged_backward,
                                setup_context=_nothing_to_save)

def _pooled_setup_context(ctx, inputs, output):
    q, k, v, buffers, variant, scale, _block, *rest = inputs
    out, lse, pooled = output
    ctx.mark_non_differentiable(pooled)  # (a target: SeerAttention's has no gradient either)
    ctx.save_for_backward(q, k, v, out, lse, *buffers)
    ctx.variant = variant
    ctx.scale = scale
    ctx.deterministic = bool(rest[0]) if rest else False


_attention_backward = _make_backward(torch.ops.attention_engine.attention_backward)


def _pooled_backward(ctx, dout, dlse, _dpooled):
    return _attention_backward(ctx, dout, dlse)


# attention_pooled: out and lse differentiate as attention's.
torch.library.register_autograd("attention_engine::attention_pooled", _pooled_backward,
                                setup_context=_pooled_setup_context)

torch.library.register_autograd(
    "attention_engine::attention",
    _make_backward(torch.ops.attention_engine.attention_backward), setup_context=_setup_context)
torch.library.register_autograd(
    "attention_engine::attention_reference",
    _make_backward(torch.ops.attention_engine.attention_reference_backward),
    setup_context=_setup_context)
