"""Drop-ins for torch.nn.attention.flex_attention's flex_attention and create_block_mask.

Kernels here evaluate mask_mod themselves, so a BlockMask mainly carries the mask_mod and
the sizes it was built for; its block occupancy is computed for inspection (sparsity()) and
to check the sizes at call time.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .api import compile

_Q_CHUNK = 1024  # query rows evaluated at once when building a block mask


class BlockMask:
    """What create_block_mask returns: the mask_mod, its sizes, and which (q block, kv block)
    pairs keep anything."""

    def __init__(self, mask_mod: Callable, B: Optional[int], H: Optional[int], q_len: int,
                 kv_len: int, block_size: tuple, occupancy: torch.Tensor, full: torch.Tensor):
        self.mask_mod = mask_mod
        self.B, self.H = B, H
        self.seq_lengths = (q_len, kv_len)
        self.BLOCK_SIZE = block_size
        self.occupancy = occupancy  # bool [B or 1, H or 1, q blocks, kv blocks]
        self.full = full            # bool, same shape: every position in the block kept

    @property
    def shape(self):
        return (self.B or 1, self.H or 1) + self.seq_lengths

    def sparsity(self) -> float:
        """Percentage of the score matrix not computed, counting every occupied block as
        whole (FlexAttention's definition)."""
        computed = self.occupancy.sum().item() * self.BLOCK_SIZE[0] * self.BLOCK_SIZE[1]
        b, h, q_len, kv_len = self.shape
        return 100.0 * (1.0 - computed / (b * h * q_len * kv_len))

    def __repr__(self):
        return (f"BlockMask(shape={self.shape}, BLOCK_SIZE={self.BLOCK_SIZE}, "
                f"sparsity={self.sparsity():.2f}%)")


def create_block_mask(mask_mod: Callable, B: Optional[int], H: Optional[int], Q_LEN: int,
                      KV_LEN: int, device="cuda", BLOCK_SIZE=128, _compile=False) -> BlockMask:
    """FlexAttention's create_block_mask. B or H None means the mask does not depend on it.
    `device` "cuda" without a GPU builds the occupancy on the CPU."""
    if not callable(mask_mod):
        raise TypeError(f"create_block_mask: mask_mod must be callable, got {type(mask_mod)}")
    if Q_LEN <= 0 or KV_LEN <= 0:
        raise ValueError(f"create_block_mask: Q_LEN and KV_LEN must be > 0, got {Q_LEN}, {KV_LEN}")
    bq, bkv = (BLOCK_SIZE, BLOCK_SIZE) if isinstance(BLOCK_SIZE, int) else tuple(BLOCK_SIZE)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        dev = torch.device("cpu")
    nb, nh = B or 1, H or 1
    b = torch.arange(nb, device=dev).view(nb, 1, 1, 1)
    h = torch.arange(nh, device=dev).view(1, nh, 1, 1)
    kv = torch.arange(KV_LEN, device=dev).view(1, 1, 1, KV_LEN)
    nqb, nkvb = -(-Q_LEN // bq), -(-KV_LEN // bkv)
    occupancy = torch.zeros(nb, nh, nqb, nkvb, dtype=torch.bool, device=dev)
    full = torch.zeros_like(occupancy)
    pad_kv = nkvb * bkv - KV_LEN
    step = max(bq, (_Q_CHUNK // bq) * bq)
    for start in range(0, Q_LEN, step):
        stop = min(Q_LEN, start + step)
        q = torch.arange(start, stop, device=dev).view(1, 1, -1, 1)
        keep = torch.broadcast_to(mask_mod(b, h, q, kv), (nb, nh, stop - start, KV_LEN))
        if keep.dtype != torch.bool:
            raise TypeError(f"create_block_mask: mask_mod must return a bool, got {keep.dtype}")
        rows = -(-(stop - start) // bq) * bq - (stop - start)
        # Padding counts as kept for "full" and as dropped for "occupied".
        padded = torch.nn.functional.pad(keep, (0, pad_kv, 0, rows), value=False)
        padded_full = torch.nn.functional.pad(keep, (0, pad_kv, 0, rows), value=True)
        shape = (nb, nh, padded.shape[2] // bq, bq, nkvb, bkv)
        first = start // bq
        occupancy[:, :, first:first + shape[2]] = padded.view(shape).any(5).any(3)
        full[:, :, first:first + shape[2]] = padded_full.view(shape).all(5).all(3)
    return BlockMask(mask_mod, B, H, Q_LEN, KV_LEN, (bq, bkv), occupancy, full)


def flex_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   score_mod: Optional[Callable] = None, block_mask: Optional[BlockMask] = None,
                   scale: Optional[float] = None, enable_gqa: bool = False,
                   return_lse: bool = False, kernel_options=None):
    """FlexAttention's flex_attention, run by attention_engine."""
    if query.dim() == 4 and key.dim() == 4 and query.size(1) != key.size(1) and not enable_gqa:
        raise ValueError(
            f"flex_attention: query has {query.size(1)} heads and key {key.size(1)}: pass "
            "enable_gqa=True for grouped-query attention")
    mask_mod = None
    if block_mask is not None:
        if not isinstance(block_mask, BlockMask):
            raise TypeError("flex_attention: block_mask must come from "
                            "attention_engine.create_block_mask")
        if query.dim() == 4 and key.dim() == 4 and block_mask.seq_lengths != (query.size(2),
                                                                               key.size(2)):
            raise ValueError(f"flex_attention: block_mask was built for (Q_LEN, KV_LEN) = "
                             f"{block_mask.seq_lengths}, but the inputs have "
                             f"({query.size(2)}, {key.size(2)})")
        mask_mod = block_mask.mask_mod
    return compile(score_mod, mask_mod, "softmax", scale)(query, key, value, return_lse=return_lse)
