"""Row normalizations: how a row's modified scores x_ij become the weights of P V.

A :class:`Normalizer` is written in a few lines of PyTorch and traced like the mods:

- ``weight(x, b, h, q_idx, kv_idx)``: f, the unnormalized weight of one score;
- ``stat(x, b, h, q_idx, kv_idx)``: g, what each kept score adds to its row's statistic
  ``L_i = sum_j g(x_ij)`` (default: the weight);
- ``finish(L, b, h, q_idx)``: c, the row's factor, from its statistic (default: 1).

``out_i = c(L_i) * sum_j f(x_ij) v_j`` over the keys the mask keeps. With ``log_domain=True``
``weight`` returns log f, the statistic is ``lse_i = log sum_j f`` (no ``stat``) and ``finish``
returns log c (default ``-lse``: softmax); the engine then keeps a running maximum, so large
log-weights do not overflow. The backward is derived from the traced functions (exact,
including the path through the statistic, unless ``detach_stats=True``); captured tensors
that require grad get gradients.

Ready ones: :data:`softmax`, :data:`none`, :data:`retention`, :data:`relu_normalized`, and the
factories :func:`softmax_with_temperature` and :func:`softmax_with_sink`.

Not expressible: a weight that depends on other scores of its row than through one
statistic (sparsemax, top-k, entmax), more than one statistic (a mean and a variance), or a
statistic other than a sum (a max, a median).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ._arity import signature, takes

__all__ = ["Normalizer", "softmax", "none", "retention", "relu_normalized",
           "softmax_with_temperature", "softmax_with_sink"]

_ELEMENT_ARGS = "(x, b, h, q_idx, kv_idx)"
_ROW_ARGS = "(L, b, h, q_idx)"


def _check_fn(fn, role: str, n: int, args: str, optional: bool) -> None:
    if fn is None:
        if optional:
            return
        raise TypeError(f"attention_engine: Normalizer needs a {role} function {args}")
    if not callable(fn):
        raise TypeError(f"attention_engine: Normalizer's {role} must be callable"
                        f"{' or None' if optional else ''}, got {type(fn).__name__}")
    sig = signature(fn)
    if sig is not None and not takes(sig, n):
        raise TypeError(f"attention_engine: Normalizer's {role} must take {n} arguments "
                        f"{args}")


class Normalizer:
    """A row normalization for ``ae.compile(..., normalize=Normalizer(...))``.

    Args:
        weight: ``weight(x, b, h, q_idx, kv_idx)``: the weight f of a modified score x (its
            log with ``log_domain=True``).
        stat: ``stat(x, b, h, q_idx, kv_idx)``: what x adds to its row's statistic L (None:
            the weight). Not with ``log_domain=True``.
        finish: ``finish(L, b, h, q_idx)``: the row's factor c(L) (its log, given the log of
            the sum, with ``log_domain=True``). None: 1 (log domain: ``-lse``, softmax).
        log_domain: the weights are exponentials, given by their logs: computed with a
            running maximum, as softmax is.
        detach_stats: the backward treats L as a constant (AttentionEngine's detached
            variant); no gradient flows through the statistic.
        name: for repr and messages.

    Ready ones in ``attention_engine.normalizers``: ``softmax``, ``none``, ``retention``
    (AttentionEngine's: x / max(sum |x|, 1)), ``relu_normalized`` (relu(x) / sum relu), and the
    factories ``softmax_with_temperature(t)`` and ``softmax_with_sink(sink)``. On a GPU they
    run fused kernels (``AE_CUSTOM_NORM=0``: the reference executor).

    ``attn(q, k, v, return_lse=True)`` returns ``(out, L)``: L per query row, [B, Hq, Sq]
    (the log of the sum in the log domain); 0 (log domain: -inf) where the mask keeps nothing,
    and out is 0 there.

    Example (AttentionEngine's retention: weight x, statistic |x|, c = 1 / max(L, 1)):
        >>> import torch, attention_engine as ae
        >>> retention = ae.Normalizer(weight=lambda x, b, h, q, k: x,
        ...                           stat=lambda x, b, h, q, k: torch.abs(x),
        ...                           finish=lambda L, b, h, q: 1 / torch.clamp(L, min=1.0))
        >>> attn = ae.compile(mask_mod=ae.mods.causal, normalize=retention)
        >>> q = k = v = torch.randn(1, 2, 8, 16)
        >>> out, L = attn(q, k, v, return_lse=True)
        >>> out.shape, L.shape
        (torch.Size([1, 2, 8, 16]), torch.Size([1, 2, 8]))
    """

    def __init__(self, weight: Callable, stat: Optional[Callable] = None,
                 finish: Optional[Callable] = None, *, log_domain: bool = False,
                 detach_stats: bool = False, name: Optional[str] = None):
        _check_fn(weight, "weight", 5, _ELEMENT_ARGS, optional=False)
        _check_fn(stat, "stat", 5, _ELEMENT_ARGS, optional=True)
        _check_fn(finish, "finish", 4, _ROW_ARGS, optional=True)
        for flag, value in (("log_domain", log_domain), ("detach_stats", detach_stats)):
            if not isinstance(value, bool):
                raise TypeError(f"attention_engine: Normalizer's {flag} must be True or False, "
                                f"got {value!r}")
        if log_domain and stat is not None:
            raise ValueError("attention_engine: a log-domain Normalizer sums its weights (the "
                             "statistic is log sum_j exp(weight)): it takes no stat function")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"attention_engine: Normalizer's name must be a str, got {name!r}")
        self.weight, self.stat, self.finish = weight, stat, finish
        self.log_domain, self.detach_stats = log_domain, detach_stats
        self.name = name or getattr(weight, "__name__", "custom")

    def __repr__(self) -> str:
        flags = "".join(f", {f}=True" for f in ("log_domain", "detach_stats") if getattr(self, f))
        return f"Normalizer({self.name!r}{flags})"


def _x(x, b, h, q_idx, kv_idx):
    return x


softmax = Normalizer(_x, log_domain=True, name="softmax")
"""Softmax written as a custom normalization: log-weight x, finish -lse (what
``normalize="softmax"`` computes; the built-in one is what the fused kernels run today)."""

none = Normalizer(_x, name="none")
"""No normalization: out = sum_j x_ij v_j (``normalize="none"``); its statistic is the row's
sum of x."""

retention = Normalizer(
    _x, stat=lambda x, b, h, q_idx, kv_idx: torch.abs(x),
    finish=lambda L, b, h, q_idx: 1.0 / torch.clamp(L, min=1.0), name="retention")
"""AttentionEngine's retention normalization (RetNet's parallel form): weight x, divided by
max(sum_j |x_ij|, 1). RetNet's per-head decay is a score_mod on a causal mask, e.g.
``score * gamma[h] ** (q_idx - kv_idx)`` with ``mask_mod=ae.mods.causal``."""

relu_normalized = Normalizer(
    lambda x, b, h, q_idx, kv_idx: torch.relu(x),
    finish=lambda L, b, h, q_idx: 1.0 / torch.clamp(L, min=1e-6), name="relu_normalized")
"""ReLU attention normalized by its row sum: relu(x) / max(sum_j relu(x_ij), 1e-6)."""


def softmax_with_temperature(temperature: torch.Tensor) -> Normalizer:
    """Softmax of x / temperature[h]: a per-head temperature (learnable: pass a tensor that
    requires grad; it is read at every call).

    Example:
        >>> import torch, attention_engine as ae
        >>> t = torch.ones(2, requires_grad=True)
        >>> attn = ae.compile(normalize=ae.normalizers.softmax_with_temperature(t))
        >>> q = k = v = torch.randn(1, 2, 8, 16)
        >>> attn(q, k, v).sum().backward()
        >>> t.grad.shape
        torch.Size([2])
    """
    return Normalizer(lambda x, b, h, q_idx, kv_idx: x / temperature[h], log_domain=True,
                      name="softmax_with_temperature")


def softmax_with_sink(sink: torch.Tensor) -> Normalizer:
    """Softmax with a per-head attention sink: one extra key per row with logit sink[h] and a
    zero value, so a row may give little weight to every real key. log c = -logaddexp(lse,
    sink[h]). Learnable: pass a tensor that requires grad.

    Example:
        >>> import torch, attention_engine as ae
        >>> sink = torch.zeros(2, requires_grad=True)
        >>> attn = ae.compile(mask_mod=ae.mods.causal,
        ...                   normalize=ae.normalizers.softmax_with_sink(sink))
        >>> q = k = v = torch.randn(1, 2, 8, 16)
        >>> attn(q, k, v).shape
        torch.Size([1, 2, 8, 16])
    """
    return Normalizer(_x, finish=lambda lse, b, h, q_idx: -torch.logaddexp(lse, sink[h]),
                      log_domain=True, name="softmax_with_sink")
