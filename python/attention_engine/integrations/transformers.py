"""Hugging Face Transformers: ``attn_implementation="attention_engine"``.

    import attention_engine.integrations.transformers   # registers the implementation
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="attention_engine")

Two functions are registered under the name "attention_engine": a mask function
(Transformers' ``AttentionMaskInterface``) and an attention function (``AttentionInterface``).
The mask function keeps the model's own mask as a mask_mod rather than a dense tensor: the
model's causal or sliding-window pattern, its padding, packed sequences (position_ids that
restart) and its KV cache's offsets. The attention function runs it, with the layer's scaling,
softcap and attention sinks, through attention_engine: fused kernels for float16 / bfloat16 on
a GPU, the reference executor otherwise. Offsets and padding are captured tensors, so a
generation loop reuses one compiled kernel per layer kind instead of compiling per step.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ..api import compile

NAME = "attention_engine"


class ModelMask:
    """The model's attention mask as a mask_mod over (q_length, kv_length), as the
    Transformers mask function hands it to the attention function. ``shape`` is that of the
    4-D mask it stands for, [batch, 1, q_length, kv_length]."""

    def __init__(self, mask_mod: Callable, batch_size: int, q_length: int, kv_length: int):
        self.mask_mod = mask_mod
        self.shape = (batch_size, 1, q_length, kv_length)
        self._compiled: dict = {}

    @property
    def ndim(self) -> int:
        return 4

    def compiled(self, softcap: Optional[float], scaling: Optional[float]):
        key = (softcap, scaling)
        if key not in self._compiled:
            self._compiled[key] = compile(_softcap_mod(softcap), self.mask_mod, scale=scaling)
        return self._compiled[key]

    def __repr__(self) -> str:
        return f"ModelMask(shape={self.shape})"


def _softcap_mod(cap: Optional[float]):
    if cap is None:
        return None

    def softcap(score, b, h, q_idx, kv_idx):
        return cap * torch.tanh(score / cap)
    return softcap


def _as_index(value, device) -> torch.Tensor:
    """An offset as a captured 0-d int32 tensor: its value is read at call time, so a new
    offset (each generation step) does not make a new kernel."""
    return torch.as_tensor(value, device=device).to(torch.int32).reshape(())


def attention_engine_mask(batch_size: int, q_length: int, kv_length: int, q_offset=0,
                          kv_offset=0, mask_function: Optional[Callable] = None,
                          attention_mask: Optional[torch.Tensor] = None, device="cpu",
                          **kwargs) -> ModelMask:
    """The mask function Transformers calls (its AttentionMaskInterface): the model's mask
    as a ModelMask. attention_mask: the 2-D padding mask [batch, >= kv_offset + kv_length]
    (True: a real token) or None."""
    from transformers.masking_utils import causal_mask_function, prepare_padding_mask

    pattern = mask_function if mask_function is not None else causal_mask_function
    padding = None
    if attention_mask is not None:
        padding = prepare_padding_mask(attention_mask.to(torch.bool), kv_length, kv_offset)
        padding = padding.to(device)
        if bool(padding.all()):
            padding = None
    q_off, kv_off = _as_index(q_offset, device), _as_index(kv_offset, device)

    def model_mask(b, h, q_idx, kv_idx):
        q, kv = q_idx + q_off, kv_idx + kv_off
        keep = pattern(b, h, q, kv)
        if padding is not None:
            keep = keep & padding[b, kv]
        return keep
    return ModelMask(model_mask, batch_size, q_length, kv_length)


def _tensor_mask(mask: torch.Tensor, query: torch.Tensor):
    """(score_mod, mask_mod) for a 4-D mask a caller passed ready-made: bool (True keeps) or
    additive float, [batch or 1, heads or 1, q_length, >= kv_length]."""
    if mask.dim() != 4:
        raise ValueError(f"attention_engine attention: a tensor attention_mask must be 4-D, got "
                         f"shape {list(mask.shape)}")
    per_b, per_h = mask.size(0) > 1, mask.size(1) > 1
    mask = mask.to(query.device)
    if mask.dtype == torch.bool:
        def tensor_mask(b, h, q_idx, kv_idx):
            return mask[b if per_b else 0, h if per_h else 0, q_idx, kv_idx]
        return None, tensor_mask
    mask = mask.to(torch.float32)

    def additive_mask(score, b, h, q_idx, kv_idx):
        return score + mask[b if per_b else 0, h if per_h else 0, q_idx, kv_idx]
    return additive_mask, None


def _causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


_UNMASKED: dict = {}


def attention_engine_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                             value: torch.Tensor, attention_mask, scaling: Optional[float] = None,
                             dropout: float = 0.0, softcap: Optional[float] = None,
                             s_aux: Optional[torch.Tensor] = None, **kwargs):
    """The attention function Transformers calls (its AttentionInterface): query
    [batch, heads, q_length, head_dim], key / value [batch, kv_heads, kv_length, head_dim]
    (grouped-query attention as they are) -> (output [batch, q_length, heads, head_dim_v],
    None)."""
    if dropout and module.training:
        raise ValueError("attention_engine does not implement attention dropout: set the "
                         "config's attention_dropout to 0 or call model.eval()")
    if isinstance(attention_mask, ModelMask):
        if attention_mask.shape[2:] != (query.size(2), key.size(2)):
            raise ValueError(f"attention_engine attention: the mask was made for (q, kv) = "
                             f"{attention_mask.shape[2:]}, but got ({query.size(2)}, "
                             f"{key.size(2)})")
        attn = attention_mask.compiled(softcap, scaling)
    elif attention_mask is None:
        is_causal = kwargs.get("is_causal")
        is_causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
        causal = bool(is_causal) and query.size(2) > 1
        key_ = (causal, softcap, scaling)
        if key_ not in _UNMASKED:
            _UNMASKED[key_] = compile(_softcap_mod(softcap), _causal if causal else None,
                                      scale=scaling)
        attn = _UNMASKED[key_]
    elif isinstance(attention_mask, torch.Tensor):
        score_mask, mask_mod = _tensor_mask(attention_mask[..., :key.size(2)], query)
        cap = _softcap_mod(softcap)
        score_mod = score_mask
        if cap is not None and score_mask is not None:
            def score_mod(score, b, h, q_idx, kv_idx):
                return score_mask(cap(score, b, h, q_idx, kv_idx), b, h, q_idx, kv_idx)
        elif cap is not None:
            score_mod = cap
        attn = compile(score_mod, mask_mod, scale=scaling)
    else:
        raise TypeError(f"attention_engine attention: attention_mask must come from the "
                        f"'{NAME}' mask function, be a 4-D tensor or None; got "
                        f"{type(attention_mask).__name__} (was the model's attention "
                        "implementation switched without rebuilding its masks?)")
    out, lse = attn(query, key, value, return_lse=True)
    if s_aux is not None:  # attention sinks: one more logit per head in the softmax's sum
        sinks = s_aux.to(lse.dtype).view(1, -1, 1)
        renorm = torch.exp(lse - torch.logaddexp(lse, sinks))
        out = (out * renorm.unsqueeze(-1).to(out.dtype)).to(query.dtype)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Registers "attention_engine" with Transformers' AttentionInterface and
    AttentionMaskInterface (done on import of this module; idempotent).

    Example:
        >>> import torch, transformers
        >>> import attention_engine.integrations.transformers  # registers it
        >>> cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
        ...                                num_hidden_layers=1, num_attention_heads=2)
        >>> model = transformers.AutoModelForCausalLM.from_config(
        ...     cfg, attn_implementation="attention_engine")
        >>> model(torch.randint(0, 64, (1, 10))).logits.shape
        torch.Size([1, 10, 64])
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, attention_engine_forward)
    AttentionMaskInterface.register(NAME, attention_engine_mask)


register()
