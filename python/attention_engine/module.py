"""ae.Attention: a compiled attention variant as an nn.Module that owns the tensors its mods
capture."""
from __future__ import annotations

import json
import keyword
import warnings
from typing import Callable, Optional

import torch

from .api import compile, run_op
from .gqa_pack import packed_call
from .ops import attention_op, reference_op


class Attention(torch.nn.Module):
    """A compiled attention variant as an ``nn.Module``: ``Attention(score_mod, mask_mod,
    normalize, scale, deterministic)(q, k, v)``.

    The mods are traced here, at construction, so forward is one op call that torch.compile
    traces without a graph break. The tensors the mods capture become the module's own:
    ``nn.Parameter`` s are registered as parameters, other tensors as buffers, under the
    names the mods know them by (``table``, ``slopes``; ``buffer0``... when a name is taken
    or unknown). Forward reads the tensors registered *now*, so the module behaves like any
    other: ``parameters()``, ``state_dict()`` / ``load_state_dict(..., assign=True)``,
    ``.to()``, ``to_empty()`` after meta-device initialization, ``copy.deepcopy``, pickling,
    ``torch.func.functional_call`` and FSDP-style parameter replacement all reach the op,
    and DDP and FSDP2 (``fully_shard``) average the captured parameters' gradients like any
    other's. A captured tensor that requires grad but is not an ``nn.Parameter`` is a buffer
    (with a warning): wrap it in ``nn.Parameter`` to train it with the module.
    A captured tensor computed from others (``table.exp()``, a view of a parameter) is not
    registered: it is read as it is, and its gradient flows back to what it came from.

    Args:
        score_mod, mask_mod, normalize, scale, deterministic: as for
            ``attention_engine.compile``.

    Call: ``forward(q, k, v, return_lse=False)``: q [B, Hq, Sq, Dqk], k [B, Hkv, Skv, Dqk],
    v [B, Hkv, Skv, Dv] -> out [B, Hq, Sq, Dv] (and lse [B, Hq, Sq]).

    A parent module that also holds a captured parameter shares it with this module (a tied
    parameter, as PyTorch has them): ``load_state_dict(assign=True)`` replaces each copy
    separately, and this module's is the one the op reads.

    Example:
        >>> import torch, attention_engine as ae
        >>> table = torch.nn.Parameter(torch.zeros(4, 17))
        >>> attn = ae.Attention(ae.mods.relative_bias(table, 8), ae.mods.causal)
        >>> [name for name, _ in attn.named_parameters()]
        ['table']
        >>> q = k = v = torch.randn(1, 4, 32, 16)
        >>> attn(q, k, v).sum().backward()
        >>> attn.table.grad.shape
        torch.Size([4, 17])
    """

    def __init__(self, score_mod: Optional[Callable] = None, mask_mod: Optional[Callable] = None,
                 normalize: str = "softmax", scale: Optional[float] = None,
                 deterministic: bool = False):
        super().__init__()
        compiled = compile(score_mod, mask_mod, normalize, scale, deterministic)
        self._ref = compiled._ref
        self._key = compiled.key
        self.normalize = normalize
        self.scale = scale
        self.deterministic = deterministic
        self._mod_names = (_name(score_mod), _name(mask_mod))
        traced_names = [b["name"] for b in json.loads(self._ref.trace_json)["buffers"]]
        # Per captured tensor: the attribute name it is registered under, or, for a tensor
        # computed from others (a view of a parameter: its gradient must flow back), the
        # tensor itself, read as it is.
        self._captured: list = []
        for i, (tensor, traced) in enumerate(zip(compiled.buffers, traced_names)):
            if tensor.grad_fn is not None:
                self._captured.append(tensor)
                continue
            name = self._free_name(traced, i)
            if isinstance(tensor, torch.nn.Parameter):
                self.register_parameter(name, tensor)
            else:
                if tensor.requires_grad:
                    warnings.warn(
                        f"ae.Attention: the captured tensor {traced!r} requires grad but is not "
                        f"an nn.Parameter, so it is registered as the buffer {name!r}: "
                        f"parameters(), optimizers, DDP and FSDP do not see it (its gradient "
                        f"is not averaged across ranks); wrap it in torch.nn.Parameter to "
                        f"train it with the module", stacklevel=2)
                self.register_buffer(name, tensor)
            self._captured.append(name)

    def __getstate__(self):
        # A Normalizer's functions need not pickle: the trace holds what they computed.
        state = self.__dict__.copy()
        if not isinstance(state.get("normalize"), str):
            state["normalize"] = f"custom:{state['normalize'].name}"
        return state

    def _free_name(self, traced: str, index: int) -> str:
        for name in (traced, f"buffer{index}"):
            if (name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("_")
                    and not hasattr(self, name)):
                return name
        n = index
        while hasattr(self, f"buffer{n}"):
            n += 1
        return f"buffer{n}"

    @property
    def captured(self) -> list:
        """The tensors the op reads, in the variant's order (the ones registered now)."""
        return [getattr(self, c) if isinstance(c, str) else c for c in self._captured]

    @property
    def key(self) -> str:
        """The variant's identity (a hash of its canonical graph)."""
        return self._key

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                return_lse: bool = False):
        """q [B, Hq, Sq, Dqk], k [B, Hkv, Skv, Dqk], v [B, Hkv, Skv, Dv] (one float dtype) ->
        out [B, Hq, Sq, Dv] in q's dtype; with return_lse, (out, lse [B, Hq, Sq]: float32,
        float64 for float64 inputs). Reads the tensors registered now (``captured``)."""
        deterministic = getattr(self, "deterministic", False)
        # Grouped-query attention with few queries (decode): the group's heads as one head's rows
        packed = packed_call(self._ref.trace_json, q, k, v, return_lse, lambda qp, key: run_op(
            attention_op, qp, k, v, self.captured, key, self.normalize, self.scale, return_lse,
            deterministic))
        if packed is not None:
            return packed
        return run_op(attention_op, q, k, v, self.captured, self._key, self.normalize,
                      self.scale, return_lse, deterministic)

    def varlen(self, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None,
               *, return_lse: bool = False, check_lengths: bool = True):
        """Packed sequences of different lengths: ``CompiledAttention.varlen``'s arguments and
        result, reading the tensors registered now."""
        from .inference import varlen
        return varlen(self, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                      return_lse=return_lse, check_lengths=check_lengths)

    def with_kvcache(self, q, k_cache, v_cache, cache_seqlens, k_new=None, v_new=None,
                     block_table=None, *, return_lse: bool = False, check_lengths: bool = True):
        """Attention against a KV cache, contiguous or paged: ``CompiledAttention.with_kvcache``'s
        arguments and result, reading the tensors registered now."""
        from .inference import with_kvcache
        return with_kvcache(self, q, k_cache, v_cache, cache_seqlens, k_new, v_new, block_table,
                            return_lse=return_lse, check_lengths=check_lengths)

    def reference(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  return_lse: bool = False):
        """The same attention through the reference executor (the GPU tests' oracle)."""
        return run_op(reference_op, q, k, v, self.captured, self._key, self.normalize,
                      self.scale, return_lse)

    def backend_for(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    backward: bool = False) -> str:
        """What a call with these inputs runs ("sm90", "sm80" or "reference: <why>"); with
        ``backward=True``, what its backward runs."""
        from . import _C
        return _C.backend_for(q, k, v, self.captured, self._key, backward)

    def graph_text(self) -> str:
        """The optimized op graph, with the user's source lines."""
        return self._ref.variant.text()

    def extra_repr(self) -> str:
        score_mod, mask_mod = self._mod_names
        return (f"score_mod={score_mod}, mask_mod={mask_mod}, normalize={self.normalize!r}, "
                f"scale={self.scale}"
                f"{', deterministic=True' if getattr(self, 'deterministic', False) else ''}")


def _name(fn) -> Optional[str]:
    return None if fn is None else getattr(fn, "__name__", type(fn).__name__)
