"""BlockMask (torch's own class, with one flag) and the functions that build masks:
create_block_mask and create_mask, with FlexAttention's signatures.

The kernels evaluate mask_mod themselves, per score, and skip the tiles it empties: a block
mask made by create_block_mask is only a record of what mask_mod keeps. Block data from
elsewhere (torch's create_block_mask, from_kv_blocks, slicing, _adjust) is honoured exactly
as FlexAttention does: see block_mask_to_mask_mod.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch.nn.attention import flex_attention as _torch_flex

_Q_CHUNK = 1024  # query rows evaluated at once when building a mask


class BlockMask(_torch_flex.BlockMask):
    """FlexAttention's BlockMask (``torch.nn.attention.flex_attention.BlockMask``: the same
    fields ``kv_num_blocks``, ``kv_indices``, ``full_kv_*``, ``q_*``, ``BLOCK_SIZE``,
    ``seq_lengths``, ``mask_mod`` and methods ``from_kv_blocks``, ``to_dense``,
    ``to_string``, ``as_tuple``, ``numel``, ``sparsity``, ``[...]``, ``.to()``,
    ``_adjust``), made by ``ae.create_block_mask``.

    ``mask_mod_is_exact`` is True when the blocks are exactly what ``mask_mod`` keeps over
    ``seq_lengths`` (create_block_mask's masks, also after ``.to()``): flex_attention then
    runs mask_mod alone. Otherwise (``from_kv_blocks``, slices, ``_adjust``) it runs the
    blocks' own semantics, which costs one extra read per score.

    Example:
        >>> import attention_engine as ae
        >>> bm = ae.create_block_mask(ae.mods.causal, None, None, 256, 256, device="cpu",
        ...                           BLOCK_SIZE=128)
        >>> bm.kv_num_blocks.tolist(), bm.full_kv_num_blocks.tolist()
        ([[[1, 1]]], [[[0, 1]]])
        >>> round(bm.sparsity(), 1)
        25.0
    """

    mask_mod_is_exact: bool = False

    def to(self, device) -> "BlockMask":
        moved = super().to(device)
        out = BlockMask(*moved.as_tuple(flatten=False))
        out.mask_mod_is_exact = self.mask_mod_is_exact
        return out


def _default_device():
    """torch's default (the current accelerator), but only one that is there: torch's own
    create_block_mask picks "cuda" on a CPU-only machine with a CUDA build, then fails."""
    return torch.accelerator.current_accelerator(check_available=True) or torch.device("cpu")


def _resolve_device(device) -> torch.device:
    dev = _default_device() if device is None else torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"create_block_mask: device {dev} was asked for but CUDA is not "
                           "available; pass device='cpu' (or leave device=None)")
    return dev


def _index_grids(B: int, H: int, KV_LEN: int, dev):
    b = torch.arange(B, device=dev).view(B, 1, 1, 1)
    h = torch.arange(H, device=dev).view(1, H, 1, 1)
    kv = torch.arange(KV_LEN, device=dev).view(1, 1, 1, KV_LEN)
    return b, h, kv


def _row_chunks(Q_LEN: int, step: int):
    for start in range(0, Q_LEN, step):
        yield start, min(Q_LEN, start + step)


def _check_lengths(where: str, Q_LEN, KV_LEN):
    for name, n in (("Q_LEN", Q_LEN), ("KV_LEN", KV_LEN)):
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"{where}: {name} must be an int > 0, got {n!r}")


def _traceable(where: str, mask_mod: Callable) -> None:
    """Traces mask_mod as flex_attention will: a Python `if`, a numpy array or an op the
    kernels cannot run fails here, naming the user's line, not deep inside torch."""
    from .api import compile
    try:
        compile(None, mask_mod)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where}: {e}") from None


def create_mask(mod_fn: Callable, B: Optional[int], H: Optional[int], Q_LEN: int, KV_LEN: int,
                device=None) -> torch.Tensor:
    """FlexAttention's create_mask: the dense bool mask [B, H, Q_LEN, KV_LEN] of a mask_mod,
    or, for a score_mod, where its output is not -inf.

    Args:
        mod_fn: ``mask_mod(b, h, q_idx, kv_idx)`` or ``score_mod(score, b, h, q_idx, kv_idx)``
            (told apart by their number of arguments, as FlexAttention does).
        B, H: batch size and heads; None: 1 (the mask does not depend on it).
        Q_LEN, KV_LEN: sequence lengths.
        device: where to build it; None: the current accelerator if one is there, else the
            CPU.

    Example:
        >>> import attention_engine as ae
        >>> ae.create_mask(ae.mods.causal, 1, 1, 3, 3, device="cpu").int()[0, 0].tolist()
        [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    """
    if not callable(mod_fn):
        raise TypeError(f"create_mask: mod_fn must be callable, got {type(mod_fn).__name__}")
    _check_lengths("create_mask", Q_LEN, KV_LEN)
    dev = _resolve_device(device)
    nb, nh = B or 1, H or 1
    b, h, kv = _index_grids(nb, nh, KV_LEN, dev)
    q = torch.arange(Q_LEN, device=dev).view(1, 1, Q_LEN, 1)
    if _torch_flex._get_mod_type(mod_fn) == _torch_flex._ModificationType.SCORE_MOD:
        _traceable_score("create_mask", mod_fn)
        out = mod_fn(torch.zeros(nb, nh, Q_LEN, KV_LEN, device=dev), b, h, q, kv)
        return torch.broadcast_to(~torch.isneginf(torch.as_tensor(out, device=dev)),
                                  (nb, nh, Q_LEN, KV_LEN)).clone()
    _traceable("create_mask", mod_fn)
    keep = torch.as_tensor(mod_fn(b, h, q, kv), device=dev)
    return torch.broadcast_to(keep.bool(), (nb, nh, Q_LEN, KV_LEN)).clone()


def _traceable_score(where: str, score_mod: Callable) -> None:
    from .api import compile
    try:
        compile(score_mod)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where}: {e}") from None


def _dense_to_ordered(dense: torch.Tensor):
    """(num_blocks [.., rows] int32, indices [.., rows, cols] int32): the kept columns of each
    row first, in order (FlexAttention's layout)."""
    dense = dense.to(torch.int32)
    num = dense.sum(-1, dtype=torch.int32)
    indices = torch.argsort(dense, dim=-1, descending=True, stable=True).to(torch.int32)
    return num, indices.contiguous()


def create_block_mask(mask_mod: Callable, B: Optional[int], H: Optional[int], Q_LEN: int,
                      KV_LEN: int, device=None, BLOCK_SIZE=128, _compile=False) -> BlockMask:
    """FlexAttention's create_block_mask: which (query block, key block) tiles mask_mod keeps
    whole, keeps in part, or drops.

    Args:
        mask_mod: ``mask_mod(b, h, q_idx, kv_idx) -> bool``.
        B, H: batch size and heads; None: the mask does not depend on it (size 1).
        Q_LEN, KV_LEN: sequence lengths the mask is for (flex_attention checks them).
        device: where its tensors live; None (as torch's): the current accelerator if one is
            there, else the CPU.
        BLOCK_SIZE: int or (q, kv) tile size (default 128).

    Returns:
        BlockMask: torch's BlockMask class (same fields and methods), ``kv_num_blocks`` int32
        [B or 1, H or 1, Q_LEN / BLOCK_SIZE rounded up], ``kv_indices`` int32 [..., kv blocks].

    Raises:
        TraceError / GraphError: mask_mod cannot run in a kernel (a Python `if` on an index,
            a numpy array, ...), naming your source line.

    Example:
        >>> import torch, attention_engine as ae
        >>> bm = ae.create_block_mask(ae.mods.sliding_window(64), None, None, 512, 512,
        ...                           device="cpu")
        >>> q = k = v = torch.randn(1, 2, 512, 16)
        >>> ae.flex_attention(q, k, v, block_mask=bm).shape
        torch.Size([1, 2, 512, 16])
    """
    if not callable(mask_mod):
        raise TypeError(f"create_block_mask: mask_mod must be callable, got "
                        f"{type(mask_mod).__name__}")
    if _torch_flex._get_mod_type(mask_mod) == _torch_flex._ModificationType.SCORE_MOD:
        raise TypeError("create_block_mask: mask_mod must take 4 arguments (b, h, q_idx, "
                        "kv_idx); this one takes 5, as a score_mod does: pass score_mods to "
                        "flex_attention(score_mod=...)")
    _check_lengths("create_block_mask", Q_LEN, KV_LEN)
    _traceable("create_block_mask", mask_mod)
    bq, bkv = (BLOCK_SIZE, BLOCK_SIZE) if isinstance(BLOCK_SIZE, int) else tuple(BLOCK_SIZE)
    if bq <= 0 or bkv <= 0:
        raise ValueError(f"create_block_mask: BLOCK_SIZE must be > 0, got {BLOCK_SIZE!r}")
    dev = _resolve_device(device)
    nb, nh = B or 1, H or 1
    b, h, kv = _index_grids(nb, nh, KV_LEN, dev)
    nqb, nkvb = -(-Q_LEN // bq), -(-KV_LEN // bkv)
    counts = torch.zeros(nb, nh, nqb, nkvb, dtype=torch.int64, device=dev)
    pad_kv = nkvb * bkv - KV_LEN
    step = max(bq, (_Q_CHUNK // bq) * bq)
    for start, stop in _row_chunks(Q_LEN, step):
        q = torch.arange(start, stop, device=dev).view(1, 1, -1, 1)
        keep = torch.as_tensor(mask_mod(b, h, q, kv), device=dev)
        if keep.dtype != torch.bool:
            raise TypeError(f"create_block_mask: mask_mod must return a bool, got {keep.dtype}")
        keep = torch.broadcast_to(keep, (nb, nh, stop - start, KV_LEN))
        rows = -(-(stop - start) // bq) * bq - (stop - start)
        padded = torch.nn.functional.pad(keep, (0, pad_kv, 0, rows), value=False)
        shape = (nb, nh, padded.shape[2] // bq, bq, nkvb, bkv)
        first = start // bq
        counts[:, :, first:first + shape[2]] = padded.view(shape).sum((3, 5))
    # As FlexAttention: a block is full when all of its bq x bkv scores are kept (a block cut
    # by the end of the sequence never is), partial when some are.
    full = counts == bq * bkv
    partial = (counts > 0) & ~full
    kv_num, kv_idx = _dense_to_ordered(partial)
    full_num, full_idx = _dense_to_ordered(full)
    mask = BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=(bq, bkv),
                                    mask_mod=mask_mod, seq_lengths=(Q_LEN, KV_LEN))
    mask.mask_mod_is_exact = True
    return mask


def block_states(block_mask) -> torch.Tensor:
    """int8 [B', H', q blocks, kv blocks]: 0 dropped, 1 partial (mask_mod decides), 2 full."""
    nqb = block_mask.kv_num_blocks.shape[-1]
    ncols = block_mask.kv_indices.shape[-1]

    def dense(num, idx):
        cols = torch.arange(ncols, device=idx.device)
        valid = cols < num.unsqueeze(-1).to(cols.dtype)
        out = torch.zeros(*num.shape, ncols + 1, dtype=torch.int8, device=idx.device)
        target = torch.where(valid, idx.to(torch.int64), torch.full_like(idx, ncols,
                                                                         dtype=torch.int64))
        out.scatter_(-1, target, 1)
        return out[..., :ncols]
    state = dense(block_mask.kv_num_blocks, block_mask.kv_indices)
    if block_mask.full_kv_num_blocks is not None:
        state = torch.where(dense(block_mask.full_kv_num_blocks,
                                  block_mask.full_kv_indices).bool(),
                            torch.full_like(state, 2), state)
    while state.dim() < 4:
        state = state.unsqueeze(0)
    assert state.shape[-2] == nqb
    return state.contiguous()


def block_mask_to_mask_mod(block_mask, device) -> Callable:
    """A mask_mod with FlexAttention's semantics of a block mask: a score counts when its
    tile is full, or partial and mask_mod keeps it. The tiles are a captured int8 tensor
    (on `device`)."""
    state = block_states(block_mask).to(device)
    bq, bkv = block_mask.BLOCK_SIZE
    inner = block_mask.mask_mod
    per_b, per_h = state.shape[0] > 1, state.shape[1] > 1

    def block_mask_mod(b, h, q_idx, kv_idx):
        s = state[b if per_b else 0, h if per_h else 0, q_idx // bq, kv_idx // bkv]
        return (s == 2) | ((s == 1) & inner(b, h, q_idx, kv_idx))
    return block_mask_mod
