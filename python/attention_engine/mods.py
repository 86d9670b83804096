"""Ready-made mods, in FlexAttention's conventions: mask_mod(b, h, q_idx, kv_idx) -> bool and
score_mod(score, b, h, q_idx, kv_idx) -> score. Factories take the variant's parameters and
return the mod."""
from __future__ import annotations

import torch


def causal(b, h, q_idx, kv_idx):
    """Each query sees itself and the keys before it."""
    return q_idx >= kv_idx


def sliding_window(window: int):
    """Causal attention to the last `window` keys before each query (and itself)."""
    if window < 0:
        raise ValueError(f"sliding_window: window must be >= 0, got {window}")

    def sliding_window_mask(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx <= window)
    return sliding_window_mask


def prefix_lm(prefix_len: int):
    """Bidirectional over the first `prefix_len` keys, causal after them."""
    def prefix_lm_mask(b, h, q_idx, kv_idx):
        return (kv_idx < prefix_len) | (q_idx >= kv_idx)
    return prefix_lm_mask


def document_mask(doc_ids: torch.Tensor, causal: bool = True):
    """Queries see keys of their own document only. doc_ids: int tensor [seq_len] (one
    packed sequence) or [batch, seq_len]."""
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
    """The ALiBi paper's head slopes 2^(-8 (h+1) / H) (for H a power of two)."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / num_heads) for h in range(num_heads)],
                        device=device)


def alibi(slopes: torch.Tensor):
    """score - slope[h] * (q_idx - kv_idx): a linear penalty on the distance to earlier keys."""
    def alibi_mod(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)
    return alibi_mod


def softcap(cap: float):
    """cap * tanh(score / cap) (Gemma 2, Grok)."""
    if cap <= 0:
        raise ValueError(f"softcap: cap must be > 0, got {cap}")

    def softcap_mod(score, b, h, q_idx, kv_idx):
        return torch.tanh(score / cap) * cap
    return softcap_mod


def relative_bias(table: torch.Tensor, max_distance: int):
    """score + table[h, clamp(q_idx - kv_idx, -max_distance, max_distance) + max_distance]: a
    learnable bias per head and clipped distance. table: [heads, 2 * max_distance + 1]."""
    if table.dim() != 2 or table.shape[1] != 2 * max_distance + 1:
        raise ValueError(f"relative_bias: table must be [heads, {2 * max_distance + 1}], got "
                         f"{list(table.shape)}")

    def relative_bias_mod(score, b, h, q_idx, kv_idx):
        d = torch.clamp(q_idx - kv_idx, -max_distance, max_distance) + max_distance
        return score + table[h, d]
    return relative_bias_mod


def and_masks(*masks):
    """A mask_mod that keeps what every one of `masks` keeps."""
    def and_mask(b, h, q_idx, kv_idx):
        result = masks[0](b, h, q_idx, kv_idx)
        for m in masks[1:]:
            result = result & m(b, h, q_idx, kv_idx)
        return result
    return and_mask


def or_masks(*masks):
    """A mask_mod that keeps what any one of `masks` keeps."""
    def or_mask(b, h, q_idx, kv_idx):
        result = masks[0](b, h, q_idx, kv_idx)
        for m in masks[1:]:
            result = result | m(b, h, q_idx, kv_idx)
        return result
    return or_mask


def sigmoid(bias: float = 0.0):
    """sigmoid(score + bias), for use with normalize="none" (sigmoid attention)."""
    def sigmoid_mod(score, b, h, q_idx, kv_idx):
        return torch.sigmoid(score + bias)
    return sigmoid_mod


def relu_squared(score, b, h, q_idx, kv_idx):
    """relu(score)^2, for use with normalize="none"."""
    r = torch.relu(score)
    return r * r
