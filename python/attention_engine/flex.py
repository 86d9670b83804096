"""Drop-ins for torch.nn.attention.flex_attention: flex_attention (this file), and BlockMask,
create_block_mask, create_mask (_block_mask.py). FlexAttention code runs unchanged with
``from attention_engine import flex_attention, create_block_mask``; torch's own BlockMask,
and_masks, or_masks, noop_mask, AuxRequest work too. What differs: docs/from-flexattention.md.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch.nn.attention import flex_attention as _torch_flex
from torch.nn.attention.flex_attention import AuxOutput, AuxRequest

from ._block_mask import (BlockMask, block_mask_to_mask_mod, create_block_mask,  # noqa: F401
                          create_mask)
from .api import compile

_LARGE_BLOCK = 1 << 30  # torch's "no block mask" BLOCK_SIZE
_MAX_SCORES_CHUNK = 1 << 24  # scores evaluated at once for max_scores


def _batch_heads(block_mask) -> tuple:
    """(batch, heads) of a block mask's tiles; 1 for dims it does not have."""
    dims = (1, 1) + tuple(block_mask.kv_indices.shape[:-2])
    return dims[-2], dims[-1]


def _mask_mod_for(block_mask, query: torch.Tensor, key: torch.Tensor) -> Optional[Callable]:
    """The mask_mod the kernels run for a block mask, after FlexAttention's checks."""
    if block_mask is None:
        return None
    if not isinstance(block_mask, _torch_flex.BlockMask):
        raise TypeError("flex_attention: block_mask must be a BlockMask (from "
                        "attention_engine.create_block_mask or torch's), got "
                        f"{type(block_mask).__name__}")
    if block_mask.mask_mod is _torch_flex._sliced_mask_mod_error:
        raise RuntimeError("flex_attention: cannot use the mask_mod of a sliced BlockMask: set "
                           "sliced.mask_mod from the original BlockMask's mask_mod")
    if tuple(block_mask.BLOCK_SIZE) == (_LARGE_BLOCK, _LARGE_BLOCK):
        return None if block_mask.mask_mod is _torch_flex.noop_mask else block_mask.mask_mod
    q_len, kv_len = block_mask.seq_lengths
    if (query.size(-2), key.size(-2)) != (q_len, kv_len):
        hint = ("create a new block mask for these lengths" if query.size(-2) > q_len
                or key.size(-2) > kv_len else "create a new block mask for these lengths, or "
                "crop this one with block_mask._adjust(q_len, kv_len)")
        raise ValueError(f"flex_attention: block_mask was built for (Q_LEN, KV_LEN) = "
                         f"{(q_len, kv_len)}, but the inputs have ({query.size(-2)}, "
                         f"{key.size(-2)}): {hint}")
    bm_b, bm_h = _batch_heads(block_mask)
    if bm_b not in (1, query.size(0)) or bm_h not in (1, query.size(1)):
        raise ValueError(f"flex_attention: block_mask has batch {bm_b} and heads {bm_h}; the "
                         f"query has batch {query.size(0)} and {query.size(1)} heads (each "
                         "must match or be 1)")
    if isinstance(block_mask, BlockMask) and block_mask.mask_mod_is_exact:
        return block_mask.mask_mod  # the blocks are what mask_mod keeps: the kernels skip them
    return block_mask_to_mask_mod(block_mask, query.device)


def _broadcast_kv_batch(query, key, value, block_mask):
    """K/V with batch 1 against a larger query batch, as FlexAttention allows with a block
    mask of the query's batch."""
    if query.size(0) == key.size(0):
        return key, value
    if block_mask is None:
        raise ValueError(f"flex_attention: query batch {query.size(0)} and key/value batch "
                         f"{key.size(0)} differ; that needs a block_mask whose batch is the "
                         "query's")
    if _batch_heads(block_mask)[0] != query.size(0):
        raise ValueError(f"flex_attention: query batch {query.size(0)}, key/value batch "
                         f"{key.size(0)} and block_mask batch {_batch_heads(block_mask)[0]}: "
                         "the block mask's batch must be the query's")
    if key.size(0) != 1 or value.size(0) != 1:
        raise ValueError(f"flex_attention: key/value batch {key.size(0)} cannot broadcast to "
                         f"query batch {query.size(0)} (it must be 1 or equal)")
    return (key.expand(query.size(0), *key.shape[1:]),
            value.expand(query.size(0), *value.shape[1:]))


def _max_scores(query, key, score_mod, mask_mod, scale) -> torch.Tensor:
    """Each query row's largest score after score_mod and the mask (-inf where nothing is
    kept), [B, Hq, Sq]: evaluated with eager PyTorch over row chunks, without gradient."""
    B, Hq, Sq, _ = query.shape
    Skv = key.size(2)
    cdt = torch.float64 if query.dtype == torch.float64 else torch.float32
    kf = key.to(cdt).repeat_interleave(Hq // key.size(1), 1)
    b = torch.arange(B, device=query.device).view(B, 1, 1, 1)
    h = torch.arange(Hq, device=query.device).view(1, Hq, 1, 1)
    kv = torch.arange(Skv, device=query.device).view(1, 1, 1, Skv)
    rows = max(1, _MAX_SCORES_CHUNK // max(1, B * Hq * Skv))
    out = []
    with torch.no_grad():
        for start in range(0, Sq, rows):
            stop = min(Sq, start + rows)
            s = query[:, :, start:stop].to(cdt) @ kf.transpose(-1, -2) * scale
            qi = torch.arange(start, stop, device=query.device).view(1, 1, -1, 1)
            if score_mod is not None:
                s = torch.broadcast_to(torch.as_tensor(score_mod(s, b, h, qi, kv), dtype=cdt),
                                       s.shape)
            if mask_mod is not None:
                keep = torch.broadcast_to(torch.as_tensor(mask_mod(b, h, qi, kv)), s.shape)
                s = s.masked_fill(~keep, -math.inf)
            out.append(s.amax(-1))
    return torch.cat(out, -1).to(cdt)


def flex_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   score_mod: Optional[Callable] = None, block_mask=None,
                   scale: Optional[float] = None, enable_gqa: bool = False,
                   return_lse: bool = False, kernel_options=None, *,
                   return_aux: Optional[AuxRequest] = None, **unknown):
    """FlexAttention's flex_attention, run by attention_engine (fused kernels for float16 /
    bfloat16 on a GPU, the reference executor otherwise), with forward and backward.

    Args:
        query: [B, Hq, Sq, Dqk]; key: [B or 1, Hkv, Skv, Dqk]; value: [B or 1, Hkv, Skv, Dv];
            one floating dtype. K/V of batch 1 broadcast when block_mask has the query's batch.
        score_mod: ``score_mod(score, b, h, q_idx, kv_idx) -> score``.
        block_mask: a BlockMask from ``ae.create_block_mask`` or torch's (its blocks are
            honoured as FlexAttention does).
        scale: factor on q·k; None: 1 / sqrt(Dqk).
        enable_gqa: allow Hq to be a multiple of Hkv.
        return_lse: (deprecated in torch) also return lse [B, Hq, Sq].
        kernel_options: not supported yet (tile choices are the planner's): anything but
            None or {} raises.
        return_aux: ``AuxRequest(lse=True, max_scores=True)`` returns (out, AuxOutput) with
            lse [B, Hq, Sq] (natural log) and max_scores [B, Hq, Sq] (each row's largest
            score after score_mod and the mask, without gradient). float32 (float64 for
            float64 inputs).

    Returns: out [B, Hq, Sq, Dv] in query's dtype; (out, lse) or (out, AuxOutput) as asked.

    Example:
        >>> import torch, attention_engine as ae
        >>> from torch.nn.attention.flex_attention import AuxRequest, and_masks
        >>> mask = ae.create_block_mask(and_masks(ae.mods.causal, ae.mods.sliding_window(16)),
        ...                             None, None, 64, 64, device="cpu")
        >>> q = k = v = torch.randn(1, 2, 64, 16)
        >>> out, aux = ae.flex_attention(q, k, v, block_mask=mask,
        ...                              return_aux=AuxRequest(lse=True, max_scores=True))
        >>> out.shape, aux.lse.shape, aux.max_scores.shape
        (torch.Size([1, 2, 64, 16]), torch.Size([1, 2, 64]), torch.Size([1, 2, 64]))
    """
    if unknown:
        raise TypeError(f"flex_attention got unexpected keyword argument(s) "
                        f"{', '.join(sorted(unknown))}; it takes FlexAttention's: score_mod, "
                        "block_mask, scale, enable_gqa, return_lse, kernel_options, return_aux")
    if kernel_options:
        raise NotImplementedError(
            f"flex_attention: kernel_options are not supported yet (got {dict(kernel_options)}): "
            "attention_engine picks its tiles itself. Remove the argument; "
            "tile overrides will come through the planner")
    for name, x in (("query", query), ("key", key), ("value", value)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"flex_attention: {name} must be a torch.Tensor, got "
                            f"{type(x).__name__}")
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        raise ValueError(f"flex_attention: query, key, value must be 4-D [B, H, S, D]; got "
                         f"{list(query.shape)}, {list(key.shape)}, {list(value.shape)}")
    if query.size(1) != key.size(1) and not enable_gqa:
        raise ValueError(
            f"flex_attention: query has {query.size(1)} heads and key {key.size(1)}: pass "
            "enable_gqa=True for grouped-query attention")
    if return_lse and return_aux is not None:
        raise ValueError("flex_attention: pass return_lse or return_aux, not both "
                         "(return_aux=AuxRequest(lse=True) replaces return_lse)")
    if return_aux is not None and not isinstance(return_aux, AuxRequest):
        raise TypeError(f"flex_attention: return_aux must be an AuxRequest, got "
                        f"{type(return_aux).__name__}")
    mask_mod = _mask_mod_for(block_mask, query, key)
    key, value = _broadcast_kv_batch(query, key, value, block_mask)
    attn = compile(score_mod, mask_mod, "softmax", scale)
    want_lse = return_lse or (return_aux is not None and return_aux.lse)
    out, lse = attn(query, key, value, return_lse=True)
    if return_aux is None:
        return (out, lse) if return_lse else out
    max_scores = None
    if return_aux.max_scores:
        s = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
        max_scores = _max_scores(query, key, score_mod, mask_mod, s)
    return out, AuxOutput(lse=lse if want_lse else None, max_scores=max_scores)
