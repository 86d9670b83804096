"""attention_engine.compile and the callable it returns."""
from __future__ import annotations

import contextlib

import math
import numbers
import threading
import weakref
from typing import Callable, Optional

import torch

from . import _C
from ._arity import signature, takes
from .errors import TraceError
from .gqa_pack import packed_call
from .ops import attention_op, reference_op
from .trace import trace

# trace JSON -> _C.Variant: a definition is parsed and differentiated in C++ once.
_VARIANTS: dict = {}
# (trace JSON, ids of the captured tensors, scale) -> CompiledAttention, while it lives.
_COMPILED: "weakref.WeakValueDictionary" = weakref.WeakValueDictionary()
# Makes the lookup and the insertion below one step: threads compiling one definition at
# once get the same object.
_COMPILE_LOCK = threading.Lock()

_SCORE_MOD_ARGS = "(score, b, h, q_idx, kv_idx)"
_MASK_MOD_ARGS = "(b, h, q_idx, kv_idx)"


class VariantRef:
    """A compiled definition by its trace (plain data): pickles and deep-copies as that text,
    and builds the C++ Variant (once per process) when first used."""

    __slots__ = ("trace_json", "_variant")

    def __init__(self, trace_json: str, variant=None):
        self.trace_json = trace_json
        self._variant = variant

    @property
    def variant(self):
        if self._variant is None:
            self._variant = _variant_of(self.trace_json)
        return self._variant

    @property
    def key(self) -> str:
        return self.variant.key

    def __reduce__(self):
        return (VariantRef, (self.trace_json,))

    def __deepcopy__(self, memo):
        return self  # immutable


def _variant_of(trace_json: str):
    variant = _VARIANTS.get(trace_json)
    if variant is None:
        variant = _VARIANTS[trace_json] = _C.build_variant(trace_json)
    return variant


def _default_scale(q: torch.Tensor) -> float:
    return 1.0 / math.sqrt(q.shape[-1]) if q.dim() > 0 and q.shape[-1] > 0 else 1.0


def _unknown_keywords(where: str, unknown: dict, accepted: str):
    names = ", ".join(sorted(unknown))
    hint = ""
    if set(unknown) & {"score_mod", "mask_mod", "block_mask", "enable_gqa", "scale"}:
        hint = (" The mods, the scale and the block mask are fixed when compiling: "
                "ae.compile(score_mod, mask_mod, scale=...), or call ae.flex_attention(q, k, v, "
                "score_mod=..., block_mask=...) for FlexAttention's signature.")
    raise TypeError(f"{where} got unexpected keyword argument(s) {names}; it takes {accepted}."
                    f"{hint}")


# Dispatch below the Autograd key (torch's own context for kernels that skip autograd).
_BelowAutograd = getattr(torch._C, "_AutoDispatchBelowAutograd", None) or contextlib.nullcontext


def run_op(op, q, k, v, buffers, key: str, normalize: str, scale: Optional[float],
           return_lse: bool, deterministic: bool = False, extra: Optional[tuple] = None):
    """One call of the native op: checks what Python can check, then (out, lse) or out.
    extra: the op's arguments after the scale in place of deterministic (attention_paged's
    page table)."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"attention_engine: {name} must be a torch.Tensor, "
                            f"got {type(x).__name__}")
    if return_lse and isinstance(normalize, str) and normalize == "none":
        raise ValueError("attention_engine: return_lse=True needs a row statistic: "
                         "normalize='softmax' or a Normalizer (this variant uses "
                         "normalize='none')")
    s = _default_scale(q) if scale is None else scale
    args = (q, k, v, list(buffers), key, float(s)) + (extra if extra is not None
                                                      else (deterministic,))
    out, lse = call_op(op, *args)
    return (out, lse) if return_lse else out


def call_op(op, *args):
    """op(*args); with grad off (outside torch.compile) below the Autograd key: nothing to
    record, so the op's own kernel directly, not through the Python autograd wrapper that
    torch.library puts in front of it (about 10 µs a call: decode is host-bound). Outputs are
    the same either way."""
    if not torch.is_grad_enabled() and not torch.compiler.is_compiling():
        with _BelowAutograd():
            return op(*args)
    return op(*args)


class CompiledAttention:
    """A compiled attention variant: ``attn(q, k, v)`` -> out, or (out, lse).

    Args (of a call):
        q: [B, Hq, Sq, Dqk], k: [B, Hkv, Skv, Dqk], v: [B, Hkv, Skv, Dv]; the same floating
            dtype and device; Hq a multiple of Hkv (grouped-query attention).
        return_lse: also return the log-sum-exp of each query row's scores, [B, Hq, Sq],
            float32 (float64 for float64 inputs), natural log; -inf for rows with nothing
            kept. Needs normalize="softmax", or a Normalizer: then its row statistic L
            (log L in the log domain; 0, or -inf, for rows with nothing kept).

    Returns: out [B, Hq, Sq, Dv] in q's dtype (and lse).

    The tensors the mods captured are read at every call (update them in place to change
    them); those that require grad get gradients. Pickles and deep-copies (as its trace and
    its tensors).

    Example:
        >>> import torch, attention_engine as ae
        >>> attn = ae.compile(mask_mod=ae.mods.causal)
        >>> q = k = v = torch.randn(1, 2, 8, 16)
        >>> out, lse = attn(q, k, v, return_lse=True)
        >>> out.shape, lse.shape
        (torch.Size([1, 2, 8, 16]), torch.Size([1, 2, 8]))
    """

    def __init__(self, ref: VariantRef, buffers, normalize: str, scale: Optional[float],
                 deterministic: bool = False, autotune="off"):
        self._ref = ref
        self._key = ref.key  # a plain str, so torch.compile traces calls without a break
        self.buffers = buffers
        self.normalize = normalize
        self.scale = scale
        self.deterministic = deterministic
        self.autotune = autotune
        if autotune != "off":  # per variant in this process (csrc/torch/autotune.h)
            _C.tune_set_mode(self._key, autotune)

    @property
    def variant(self):
        """The C++ Variant (the op graphs, their analysis and kernel sources)."""
        return self._ref.variant

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
        """What the core found: which mods depend only on indices, which tensors they read."""
        return self.variant.analysis()

    def __repr__(self) -> str:
        return (f"CompiledAttention(key={self.key}, normalize={self.normalize!r}, "
                f"buffers={len(self.buffers)}, scale={self.scale}"
                f"{', deterministic=True' if self.deterministic else ''})")

    def __reduce__(self):
        # A Normalizer's functions need not pickle; the trace holds what they computed.
        normalize = self.normalize if isinstance(self.normalize, str) else \
            f"custom:{self.normalize.name}"
        return (_rebuild, (self._ref, list(self.buffers), normalize, self.scale,
                           self.deterministic, self.autotune))

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                 return_lse: bool = False, **unknown):
        """Runs the attention: q [B, Hq, Sq, Dqk], k [B, Hkv, Skv, Dqk], v [B, Hkv, Skv, Dv]
        -> out [B, Hq, Sq, Dv] (and lse [B, Hq, Sq] with return_lse=True). A torch op with
        forward and backward: fused kernels for float16 / bfloat16 CUDA tensors the kernels
        support, the reference executor otherwise (``backend_for`` tells which)."""
        if unknown:
            _unknown_keywords("CompiledAttention.__call__", unknown, "(q, k, v, *, return_lse=False)")
        # Grouped-query attention with few queries (decode): the group's heads as one head's rows
        packed = packed_call(self._ref.trace_json, q, k, v, return_lse, lambda qp, key: run_op(
            attention_op, qp, k, v, self.buffers, key, self.normalize, self.scale, return_lse,
            self.deterministic), self.autotune)
        if packed is not None:
            return packed
        return run_op(attention_op, q, k, v, self.buffers, self._key, self.normalize,
                      self.scale, return_lse, self.deterministic)

    def varlen(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor,
               max_seqlen_q: Optional[int] = None, max_seqlen_k: Optional[int] = None, *,
               return_lse: bool = False, check_lengths: bool = True):
        """Packed sequences of different lengths (FlashAttention's ``flash_attn_varlen_func``):
        q [total_q, Hq, D], k [total_k, Hkv, D], v [total_k, Hkv, Dv]; sequence i is tokens
        ``cu_seqlens[i]:cu_seqlens[i+1]`` (int32/int64, starting at 0). The mods see ``b`` = the
        sequence and positions within it, the queries being its last tokens (``q_idx`` of
        query j is ``len_k - len_q + j``: with as many queries as keys, plain positions).
        Returns out [total_q, Hq, Dv] (and lse [Hq, total_q]). Forward and backward.

        The cumulative lengths are checked on the host: cu_seqlens on the GPU cost a
        synchronization per call, on the CPU none. ``check_lengths=False`` (with
        ``max_seqlen_q`` and ``max_seqlen_k``) reads nothing back, as FlashAttention: the
        lengths are then trusted, and wrong ones (past the tensors' tokens) make the kernels
        read and write out of bounds.

        Example:
            >>> import torch, attention_engine as ae
            >>> attn = ae.compile(mask_mod=ae.mods.causal)
            >>> cu = torch.tensor([0, 3, 8])           # two sequences: 3 and 5 tokens
            >>> q = k = v = torch.randn(8, 2, 16)
            >>> attn.varlen(q, k, v, cu, cu).shape
            torch.Size([8, 2, 16])
        """
        from .inference import varlen
        return varlen(self, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                      return_lse=return_lse, check_lengths=check_lengths)

    def with_kvcache(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     cache_seqlens, k_new: Optional[torch.Tensor] = None,
                     v_new: Optional[torch.Tensor] = None,
                     block_table: Optional[torch.Tensor] = None, *, return_lse: bool = False,
                     check_lengths: bool = True):
        """Attention against a KV cache (FlashAttention's ``flash_attn_with_kvcache``): q
        [B, Sq, Hq, D]; the cache contiguous, k_cache [B, S_max, Hkv, D], or paged,
        [num_pages, page_size, Hkv, D] with ``block_table`` [B, max_pages] (int32) naming
        each sequence's pages; ``cache_seqlens`` [B] (or an int) the tokens each sequence
        has. ``k_new`` / ``v_new`` [B, S_new, Hkv, D] are written into the cache in place at
        positions ``cache_seqlens[b] + i`` first. The queries are each sequence's last Sq
        tokens: ``q_idx`` of query i is ``length - Sq + i`` (length counting the new tokens),
        so decoding token by token gives what the full forward gives. Returns out
        [B, Sq, Hq, Dv] (and lse [B, Hq, Sq]). Gradients reach q, k_new, v_new and the
        captured tensors, not the cache's earlier contents.

        ``check_lengths=True`` reads the lengths (and the pages they use) on the host, one
        synchronization per call, to refuse what does not fit the cache. ``False`` (a decode
        loop whose lengths and pages are known good; no tensor requiring gradients) reads
        nothing back, so the call can be captured in a CUDA graph: the kernels take each
        sequence's length from the device, clamped into the cache, and a page index out of
        range reads zeros. Bad values then give wrong answers (and appended tokens may land in
        another sequence's slots), never an out-of-bounds access.

        Example:
            >>> import torch, attention_engine as ae
            >>> attn = ae.compile(mask_mod=ae.mods.causal)
            >>> k_cache = torch.zeros(2, 64, 2, 16); v_cache = torch.zeros(2, 64, 2, 16)
            >>> lens = torch.tensor([5, 9], dtype=torch.int32)   # tokens already cached
            >>> q = k1 = v1 = torch.randn(2, 1, 2, 16)          # one new token each
            >>> attn.with_kvcache(q, k_cache, v_cache, lens, k1, v1).shape
            torch.Size([2, 1, 2, 16])
        """
        from .inference import with_kvcache
        return with_kvcache(self, q, k_cache, v_cache, cache_seqlens, k_new, v_new, block_table,
                            return_lse=return_lse, check_lengths=check_lengths)

    def reference(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                  return_lse: bool = False):
        """The same attention through the reference executor (ATen, any device and float
        dtype, with autograd): the oracle the kernels are tested against."""
        return run_op(reference_op, q, k, v, self.buffers, self._key, self.normalize,
                      self.scale, return_lse)

    def backend_for(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    backward: bool = False) -> str:
        """What a call with these inputs runs: "sm90" (the Hopper templates), "sm80" (the
        mma.sync ones), "gfx90a" (AMD MI250 / MI210), or "reference: <why>"; with
        ``backward=True``, what its backward runs."""
        return _C.backend_for(q, k, v, list(self.buffers), self._key, backward)


def _rebuild(ref: VariantRef, buffers, normalize: str, scale: Optional[float],
             deterministic: bool = False, autotune: str = "off"):
    return CompiledAttention(ref, list(buffers), normalize, scale, deterministic, autotune)


def _tune_mode(autotune) -> str:
    """compile's autotune argument -> "off", "on" or "cached"."""
    if autotune is True or autotune is False:
        return "on" if autotune else "off"
    if isinstance(autotune, str) and autotune in ("on", "off", "cached"):
        return autotune
    raise ValueError(f"attention_engine: autotune must be True, False, 'on', 'off' or 'cached', "
                     f"got {autotune!r}")


def _check_arity(fn: Optional[Callable], role: str) -> None:
    """A clear TypeError when a mod cannot take FlexAttention's arguments."""
    if fn is None:
        return
    if not callable(fn):
        raise TypeError(f"attention_engine: {role} must be callable or None, got "
                        f"{type(fn).__name__}")
    sig = signature(fn)
    n = 5 if role == "score_mod" else 4
    if sig is None or takes(sig, n):  # (None: a builtin or C function, the trace tells)
        return
    name = getattr(fn, "__name__", repr(fn))
    expected = _SCORE_MOD_ARGS if role == "score_mod" else _MASK_MOD_ARGS
    hint = ""
    if role == "score_mod" and takes(sig, 4):
        hint = f" It takes 4, as a mask_mod{_MASK_MOD_ARGS} does: pass it as mask_mod=."
    elif role == "mask_mod" and takes(sig, 5):
        hint = f" It takes 5, as a score_mod{_SCORE_MOD_ARGS} does: pass it as score_mod=."
    raise TypeError(f"attention_engine: {role} must take {n} arguments {expected}, but "
                    f"{name}{sig} does not.{hint}")


def _numpy_arrays_in(fn, seen=None) -> list:
    """Names of numpy arrays a function reaches by closure or as a global (also through the
    functions it closes over, as and_masks' list does)."""
    try:
        import numpy as np
    except ImportError:
        return []
    seen = set() if seen is None else seen
    if fn is None or id(fn) in seen:
        return []
    seen.add(id(fn))
    found = []
    code = getattr(fn, "__code__", None)
    values = []
    if code is not None:
        cells = getattr(fn, "__closure__", None) or ()
        for name, cell in zip(code.co_freevars, cells):
            try:
                values.append((name, cell.cell_contents))
            except ValueError:
                pass
        glb = getattr(fn, "__globals__", {})
        values += [(name, glb[name]) for name in code.co_names if name in glb]
    for name, value in values:
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, np.ndarray):
                found.append(name)
            elif callable(item) and getattr(item, "__code__", None) is not None:
                found += _numpy_arrays_in(item, seen)
    return found


def compile(score_mod: Optional[Callable] = None, mask_mod: Optional[Callable] = None,
            normalize="softmax", scale: Optional[float] = None,
            deterministic: bool = False, autotune=False) -> CompiledAttention:
    """Compiles an attention variant written with FlexAttention's conventions.

    Traces the mods, builds the op graph in C++ (folded, CSE'd, differentiated) and returns a
    callable torch op with forward and backward; kernels are generated and compiled at the
    first call on a GPU (cached on disk).

    Args:
        score_mod: ``score_mod(score, b, h, q_idx, kv_idx) -> score``: modifies each score
            ``q·k * scale`` (float) given int indices (batch, query head, query and key
            positions). None: the score itself.
        mask_mod: ``mask_mod(b, h, q_idx, kv_idx) -> bool``: which scores count. None: all.
        normalize: "softmax" (online softmax), "none" (O = sum_j score_mod(s_ij) v_j, for
            sigmoid or ReLU attention), or an ``ae.Normalizer`` (a row normalization written
            in PyTorch, e.g. ``ae.normalizers.retention``; it runs on the reference executor
            until its kernels exist).
        scale: the factor on q·k; None: 1 / sqrt(head_dim of q).
        deterministic: the backward gives the same gradients bit for bit run to run (the
            fused kernels add dQ's parts in a fixed order, at a cost the README states).
            ``torch.use_deterministic_algorithms(True)`` turns it on for every variant. The
            gradients of captured tensors are not covered: their backward raises.
        autotune: False (the tile tables: the default), True (a call whose shape class has
            no stored tuning choice first times the candidate configurations on the GPU, a
            few seconds, and stores the fastest beside the kernel cache; later calls, in any
            process, read it in microseconds) or "cached" (stored choices, never tuning).
            ``AE_AUTOTUNE=1`` / ``cached`` / ``0`` sets it for every variant.

    Returns:
        CompiledAttention: ``attn(q, k, v, *, return_lse=False)`` with q [B, Hq, Sq, Dqk],
        k [B, Hkv, Skv, Dqk], v [B, Hkv, Skv, Dv] (float16 / bfloat16 run the fused kernels on
        a GPU; any float dtype runs the reference executor). Compiling the same definition
        twice returns the same object.

    Raises:
        TraceError: a mod does something that cannot be traced (names your source line).
        GraphError: the C++ core rejects the graph (names the op and your source line).
        TypeError: a mod that does not take FlexAttention's arguments.

    Example:
        >>> import torch, attention_engine as ae
        >>> slopes = ae.mods.alibi_slopes(4)
        >>> attn = ae.compile(score_mod=ae.mods.alibi(slopes), mask_mod=ae.mods.causal)
        >>> q = torch.randn(2, 4, 32, 16)
        >>> k = v = torch.randn(2, 2, 32, 16)   # 2 kv heads: grouped-query attention
        >>> attn(q, k, v).shape
        torch.Size([2, 4, 32, 16])
    """
    if scale is not None and (not isinstance(scale, numbers.Real) or isinstance(scale, bool)
                              or not math.isfinite(scale)):
        raise TypeError(f"attention_engine: scale must be a finite number or None, got {scale!r}")
    _check_arity(score_mod, "score_mod")
    _check_arity(mask_mod, "mask_mod")
    try:
        trace_json, tensors = trace(score_mod, mask_mod, normalize)
    except (TraceError, IndexError, TypeError, ValueError) as e:
        # numpy raises its own errors when indexed with a traced value.
        arrays = _numpy_arrays_in(score_mod) + _numpy_arrays_in(mask_mod)
        if arrays:
            raise TraceError(f"{e}. The mods use numpy array(s) {', '.join(dict.fromkeys(arrays))}"
                             ": capture torch tensors instead (torch.as_tensor(array)), which "
                             "the kernels read at call time") from None
        raise
    if not isinstance(deterministic, bool):
        raise TypeError(f"attention_engine: deterministic must be True or False, got "
                        f"{deterministic!r}")
    mode = _tune_mode(autotune)
    key = (trace_json, tuple(id(t) for t in tensors), scale, deterministic)
    with _COMPILE_LOCK:
        hit = _COMPILED.get(key)
        if hit is not None and all(a is b for a, b in zip(hit.buffers, tensors)):
            if mode != "off":
                hit.autotune = mode
                _C.tune_set_mode(hit.key, mode)
            return hit
        compiled = CompiledAttention(VariantRef(trace_json, _variant_of(trace_json)), tensors,
                                     normalize, scale, deterministic, mode)
        _COMPILED[key] = compiled
        return compiled


def clear_kernel_caches() -> None:
    """Drops the in-process kernel caches: the next call loads kernels from the disk cache
    (for timing a disk hit; the disk cache itself stays).

    Example:
        >>> import attention_engine as ae
        >>> ae.clear_kernel_caches()
    """
    _C.clear_kernel_caches()


def build_count() -> int:
    """How many distinct definitions this process has built in C++ (for tests)."""
    return len(_VARIANTS)
