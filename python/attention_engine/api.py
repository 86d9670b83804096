"""attention_engine.compile and the callable it returns."""
from __future__ import annotations

import math
import numbers
import threading
import weakref
from typing import Callable, Optional

import torch

from . import _C
from .ops import attention_op, reference_op
from .trace import trace

# trace JSON -> _C.Variant: a definition is parsed and differentiated in C++ once.
_VARIANTS: dict = {}
# (trace JSON, ids of the captured tensors, scale) -> CompiledAttention, while it lives.
_COMPILED: "weakref.WeakValueDictionary" = weakref.WeakValueDictionary()
# Makes the lookup and the insertion below one step: threads compiling one definition at
# once get the same object.
_COMPILE_LOCK = threading.Lock()


class CompiledAttention:
    """A compiled attention variant: ``attn(q, k, v)`` -> out, or (out, lse).

    q [B, Hq, Sq, Dqk], k [B, Hkv, Skv, Dqk], v [B, Hkv, Skv, Dv]; Hq a multiple of Hkv.
    The tensors the mods captured are read at every call (update them in place to change
    them); those that require grad get gradients.
    """

    def __init__(self, variant, buffers, normalize: str, scale: Optional[float]):
        self.variant = variant
        self._key = variant.key  # a plain str, so torch.compile traces calls without a break
        self.buffers = buffers
        self.normalize = normalize
        self.scale = scale

    @property
    def key(self) -> str:
        """The variant's identity (a hash of its canonical graph)."""
        return self._key

    def graph_text(self) -> str:
        """The optimized op graph, with the user's source lines."""
        return self.variant.text()

    def backward_graph_text(self) -> str:
        """The op graph with its derivatives (d_score, d_load)."""
        return self.variant.backward_text()

    def analysis(self) -> str:
        return self.variant.analysis()

    def __repr__(self) -> str:
        return (f"CompiledAttention(key={self.key}, normalize={self.normalize!r}, "
                f"buffers={len(self.buffers)}, scale={self.scale})")

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                 return_lse: bool = False):
        return self._run(attention_op, q, k, v, return_lse)

    def reference(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                  return_lse: bool = False):
        """The same attention through the reference executor (ATen, any device and float
        dtype, with autograd): the oracle the kernels are tested against."""
        return self._run(reference_op, q, k, v, return_lse)

    def backend_for(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str:
        """What a call with these inputs runs: "sm90" (Hopper forward, sm80 backward), "sm80", or
        "reference: <why>"."""
        return _C.backend_for(q, k, v, self.buffers, self._key)

    def _run(self, op, q, k, v, return_lse):
        for name, x in (("q", q), ("k", k), ("v", v)):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"attention_engine: {name} must be a torch.Tensor, "
                                f"got {type(x).__name__}")
        if return_lse and self.normalize != "softmax":
            raise ValueError("attention_engine: return_lse=True needs normalize='softmax' "
                             f"(this variant uses normalize={self.normalize!r})")
        scale = self.scale
        if scale is None:
            scale = 1.0 / math.sqrt(q.shape[-1]) if q.dim() > 0 and q.shape[-1] > 0 else 1.0
        out, lse = op(q, k, v, self.buffers, self._key, float(scale))
        return (out, lse) if return_lse else out


def compile(score_mod: Optional[Callable] = None, mask_mod: Optional[Callable] = None,
            normalize: str = "softmax", scale: Optional[float] = None) -> CompiledAttention:
    """Traces score_mod(score, b, h, q_idx, kv_idx) and mask_mod(b, h, q_idx, kv_idx)
    (FlexAttention's conventions), builds the op graph in C++, and returns a callable torch
    op with forward and backward.

    normalize: "softmax" (online softmax) or "none" (O = sum_j score_mod(s_ij) v_j, for
    sigmoid or ReLU attention). scale defaults to 1 / sqrt(head_dim).
    """
    if scale is not None and (not isinstance(scale, numbers.Real) or isinstance(scale, bool)
                              or not math.isfinite(scale)):
        raise TypeError(f"attention_engine: scale must be a finite number or None, got {scale!r}")
    trace_json, tensors = trace(score_mod, mask_mod, normalize)
    key = (trace_json, tuple(id(t) for t in tensors), scale)
    with _COMPILE_LOCK:
        hit = _COMPILED.get(key)
        if hit is not None and all(a is b for a, b in zip(hit.buffers, tensors)):
            return hit
        variant = _VARIANTS.get(trace_json)
        if variant is None:
            variant = _VARIANTS[trace_json] = _C.build_variant(trace_json)
        compiled = CompiledAttention(variant, tensors, normalize, scale)
        _COMPILED[key] = compiled
        return compiled


def clear_kernel_caches() -> None:
    """Drops the in-process kernel caches: the next call loads kernels from the disk cache
    (for timing a disk hit; the disk cache itself stays)."""
    _C.clear_kernel_caches()


def build_count() -> int:
    """How many distinct definitions this process has built in C++ (for tests)."""
    return len(_VARIANTS)
