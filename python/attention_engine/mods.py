"""Ready-made mods, in FlexAttention's conventions: mask_mod(b, h, q_idx, kv_idx) -> bool and
score_mod(score, b, h, q_idx, kv_idx) -> score. Factories take the variant's parameters and
return the mod."""
from __future__ import annotations

import torch


def causal(b, h, q_idx, kv_idx):
    """mask_mod: each query sees itself and the keys before it (q_idx >= kv_idx).

    Example:
        >>> import attention_engine as ae
        >>> ae.create_mask(ae.mods.causal, None, None, 3, 3, device="cpu").int()[0, 0].tolist()
        [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    """
    return q_idx >= kv_idx


def sliding_window(window: int):
    """mask_mod factory: causal attention to the last `window` keys before each query (and
    itself): keeps 0 <= q_idx - kv_idx <= window. window: int >= 0.

    Example:
        >>> import attention_engine as ae
        >>> m = ae.mods.sliding_window(1)
        >>> ae.create_mask(m, None, None, 4, 4, device="cpu").int()[0, 0].tolist()
        [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    """
    if window < 0:
        raise ValueError(f"sliding_window: window must be >= 0, got {window}")

    def sliding_window_mask(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx <= window)
    return sliding_window_mask


def prefix_lm(prefix_len: int):
    """mask_mod factory: bidirectional over the first `prefix_len` keys, causal after them.

    Example:
        >>> import attention_engine as ae
        >>> m = ae.mods.prefix_lm(2)
        >>> ae.create_mask(m, None, None, 4, 4, device="cpu").int()[0, 0].tolist()
        [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    """
    def prefix_lm_mask(b, h, q_idx, kv_idx):
        return (kv_idx < prefix_len) | (q_idx >= kv_idx)
    return prefix_lm_mask


def document_mask(doc_ids: torch.Tensor, causal: bool = True):
    """mask_mod factory: queries see keys of their own document only (and, with causal,
    not later ones). doc_ids: int tensor [seq_len] (one packed sequence) or [batch,
    seq_len], read at call time (update it in place for the next batch).

    Example:
        >>> import torch, attention_engine as ae
        >>> m = ae.mods.document_mask(torch.tensor([0, 0, 1, 1]))
        >>> ae.create_mask(m, None, None, 4, 4, device="cpu").int()[0, 0].tolist()
        [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]
    """
    if doc_ids.dim() == 1:
        def same_doc(b, h, q_idx, kv_idx):
            return doc_ids[q_idx] == doc_ids[kv_idx]
    elif doc_ids.dim() == 2:
        def same_doc(b, h, q_idx, kv_idx):
            return doc_ids[b, q_idx] == doc_ids[b, kv_idx]
    else:
        raise ValueError(f"document_mask: doc_ids must be [seq] or [batch, seq], got "
                         f"{list(doc_ids.shape)}")
    if not causal:
        return same_doc

    def causal_document_mask(b, h, q_idx, kv_idx):
        return same_doc(b, h, q_idx, kv_idx) & (q_idx >= kv_idx)
    return causal_document_mask


def alibi_slopes(num_heads: int, device=None) -> torch.Tensor:
    """The ALiBi paper's head slopes 2^(-8 (h+1) / H) (for H a power of two): float32
    [num_heads].

    Example:
        >>> import attention_engine as ae
        >>> ae.mods.alibi_slopes(4).tolist()
        [0.25, 0.0625, 0.015625, 0.00390625]
    """
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / num_heads) for h in range(num_heads)],
                        device=device)


def alibi(slopes: torch.Tensor):
    """score_mod factory: score - slopes[h] * (q_idx - kv_idx), a linear penalty on the
    distance to earlier keys. slopes: float tensor [heads] (captured: read at call time;
    gets a gradient when it requires one).

    Example:
        >>> import torch, attention_engine as ae
        >>> attn = ae.compile(ae.mods.alibi(ae.mods.alibi_slopes(2)), ae.mods.causal)
        >>> attn(*[torch.randn(1, 2, 8, 16)] * 3).shape
        torch.Size([1, 2, 8, 16])
    """
    def alibi_mod(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)
    return alibi_mod


def softcap(cap: float):
    """score_mod factory: cap * tanh(score / cap) (Gemma 2, Grok). cap: float > 0.

    Example:
        >>> import torch, attention_engine as ae
        >>> attn = ae.compile(ae.mods.softcap(30.0))
        >>> attn(*[torch.randn(1, 2, 8, 16)] * 3).shape
        torch.Size([1, 2, 8, 16])
    """
    if cap <= 0:
        raise ValueError(f"softcap: cap must be > 0, got {cap}")

    def softcap_mod(score, b, h, q_idx, kv_idx):
        return torch.tanh(score / cap) * cap
    return softcap_mod


def relative_bias(table: torch.Tensor, max_distance: int):
    """score_mod factory: score + table[h, clamp(q_idx - kv_idx, -max_distance,
    max_distance) + max_distance], a learnable bias per head and clipped distance.
    table: float [heads, 2 * max_distance + 1] (an nn.Parameter gets gradients).

    Example:
        >>> import torch, attention_engine as ae
        >>> table = torch.nn.Parameter(torch.zeros(2, 9))
        >>> attn = ae.Attention(ae.mods.relative_bias(table, 4), ae.mods.causal)
        >>> attn(*[torch.randn(1, 2, 8, 16)] * 3).sum().backward()
        >>> attn.table.grad.shape
        torch.Size([2, 9])
    """
    if table.dim() != 2 or table.shape[1] != 2 * max_distance + 1:
        raise ValueError(f"relative_bias: table must be [heads, {2 * max_distance + 1}], got "
                         f"{list(table.shape)}")

    def relative_bias_mod(score, b, h, q_idx, kv_idx):
        d = torch.clamp(q_idx - kv_idx, -max_distance, max_distance) + max_distance
        return score + table[h, d]
    return relative_bias_mod


def and_masks(*masks):
    """A mask_mod that keeps what every one of `masks` keeps (as torch's and_masks, which
    works too).

    Example:
        >>> import attention_engine as ae
        >>> m = ae.mods.and_masks(ae.mods.causal, ae.mods.sliding_window(1))
        >>> ae.create_mask(m, None, None, 3, 3, device="cpu").int()[0, 0].tolist()
        [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    """
    def and_mask(b, h, q_idx, kv_idx):
        result = masks[0](b, h, q_idx, kv_idx)
        for m in masks[1:]:
            result = result & m(b, h, q_idx, kv_idx)
        return result
    return and_mask


def or_masks(*masks):
    """A mask_mod that keeps what any one of `masks` keeps (as torch's or_masks, which works
    too).

    Example:
        >>> import attention_engine as ae
        >>> m = ae.mods.or_masks(ae.mods.causal, ae.mods.prefix_lm(2))
        >>> ae.create_mask(m, None, None, 3, 3, device="cpu").int()[0, 0].tolist()
        [[1, 1, 0], [1, 1, 0], [1, 1, 1]]
    """
    def or_mask(b, h, q_idx, kv_idx):
        result = masks[0](b, h, q_idx, kv_idx)
        for m in masks[1:]:
            result = result | m(b, h, q_idx, kv_idx)
        return result
    return or_mask


def sigmoid(bias: float = 0.0):
    """score_mod factory: sigmoid(score + bias), for normalize="none" (sigmoid attention;
    bias about -log(seq_len)).

    Example:
        >>> import torch, attention_engine as ae
        >>> attn = ae.compile(ae.mods.sigmoid(-2.0), ae.mods.causal, normalize="none")
        >>> attn(*[torch.randn(1, 2, 8, 16)] * 3).shape
        torch.Size([1, 2, 8, 16])
    """
    def sigmoid_mod(score, b, h, q_idx, kv_idx):
        return torch.sigmoid(score + bias)
    return sigmoid_mod


def relu_squared(score, b, h, q_idx, kv_idx):
    """score_mod: relu(score)^2, for normalize="none".

    Example:
        >>> import torch, attention_engine as ae
        >>> attn = ae.compile(ae.mods.relu_squared, normalize="none")
        >>> attn(*[torch.randn(1, 2, 8, 16)] * 3).shape
        torch.Size([1, 2, 8, 16])
    """
    r = torch.relu(score)
    return r * r
