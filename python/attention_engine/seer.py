"""SeerAttention's learned block sparsity: a gate that predicts which blocks of the attention map
matter, the target it is trained against, its loss, block selection, and block-sparse attention
for every variant.

    gate = SeerGate(heads=8, kv_heads=2, head_dim=64)
    logits = gate(q, k)                                    # [B, Hq, nq, nk]
    out, target = attention_with_pooling(attn, q, k, v)    # the gate-training forward
    loss = gate_loss(logits, target)                       # training: distillation
    blocks = select_blocks(logits, keep_ratio=0.1)         # inference: bool [B, Hq, nq, nk]
    out = BlockSparseAttention(score_mod, mask_mod)(q, k, v, blocks)

The gate follows SeerAttention (`../shared/notes/designs-of-the-fastest-kernels.md` §6): Q and
K pooled per block (average, max and min, concatenated), a per-head linear layer, rotary
embedding at block positions, logits = q~ k~^T / sqrt(hidden). How it runs: the pooled map
from one forward that also writes each query row's largest score per key block (softmax
variants; the fused kernels on NVIDIA GPUs), block-sparse attention as a mask_mod reading the
block tensor, whose tiles the planner builds from the tensor (empty ones skipped, full ones
unmasked).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .api import _default_scale, compile as _compile, run_op
from .ops import attention_op, pooled_op


def _blocks(n: int, block_size: int) -> int:
    return -(-n // block_size)


def _check_block_size(block_size) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"attention_engine.seer: block_size must be a positive int, got "
                         f"{block_size!r}")
    return block_size


def _causal_blocks(nq: int, nk: int, device) -> torch.Tensor:
    """bool [nq, nk]: the key blocks a causal query block reaches (self-attention, nq == nk)."""
    return torch.ones(nq, nk, dtype=torch.bool, device=device).tril()


def _check_qk(q: torch.Tensor, k: torch.Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"attention_engine.seer: q and k must be [B, H, S, D], got "
                         f"{list(q.shape)} and {list(k.shape)}")


def _softmax(attn) -> bool:
    return isinstance(attn.normalize, str) and attn.normalize == "softmax"


def attention_with_pooling(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           block_size: int = 64, *, return_lse: bool = False):
    """SeerAttention's gate-training forward: ``attn(q, k, v)`` and, from the same pass over the
    scores, the gate's target (``pooled_attention_map``'s: per query block and key block the
    largest attention weight, each query block's row divided by its sum over the key blocks).
    q [B, Hq, S, D], k [B, Hkv, S_kv, D], v [B, Hkv, S_kv, Dv] -> (out [B, Hq, S, Dv], pooled
    [B, Hq, nq, nk]), or (out, lse, pooled) with ``return_lse``. out (and lse) differentiate as
    ``attn``'s; pooled (float32, float64 for float64 inputs) has no gradient.

    Softmax variants run one forward that also writes each query row's largest score per key
    block (on NVIDIA GPUs the fused kernels, for blocks of a multiple of 8 keys: no S x S map is
    made), and the pooling reads those and the LSE; where the kernels do not take the call (CPU,
    other block sizes) the reference executor computes the same from the scores, in chunks of
    query rows. Other normalizations compute out with ``attn`` and the map with
    ``pooled_attention_map``.

    Example:
        >>> import torch, attention_engine as ae
        >>> attn = ae.compile(mask_mod=ae.mods.causal)
        >>> q = k = v = torch.randn(1, 2, 64, 8)
        >>> out, target = ae.seer.attention_with_pooling(attn, q, k, v, block_size=16)
        >>> out.shape, target.shape, bool(torch.allclose(target.sum(-1), torch.ones(1, 2, 4)))
        (torch.Size([1, 2, 64, 8]), torch.Size([1, 2, 4, 4]), True)"""
    _check_block_size(block_size)
    _check_qk(q, k)
    if not _softmax(attn):
        out = attn(q, k, v, return_lse=return_lse)
        pooled = pooled_attention_map(attn, q, k, block_size)
        return (*out, pooled) if return_lse else (out, pooled)
    scale = _default_scale(q) if attn.scale is None else attn.scale
    out, lse, pooled = pooled_op(q, k, v, list(attn.buffers), attn.key, float(scale), block_size,
                                 attn.deterministic)
    return (out, lse, pooled) if return_lse else (out, pooled)


def pooled_attention_map(attn, q: torch.Tensor, k: torch.Tensor, block_size: int = 64) -> torch.Tensor:
    """The gate's training target for a compiled variant ``attn``: per query block and key
    block, the largest attention weight in the block (the max-pool of the attention map), each
    query block's row then divided by its sum over key blocks. q [B, Hq, S, D], k
    [B, Hkv, S_kv, D] -> float32 [B, Hq, nq, nk], without gradients; blocks the variant masks
    entirely are 0.

    Softmax variants: ``attention_with_pooling``'s forward with k as V (its output unused;
    with V at hand, that function gives both at once). Other normalizations: the weights
    through the reference executor (an S x S map per head: short sequences only).

    Example:
        >>> import torch, attention_engine as ae
        >>> attn = ae.compile(mask_mod=ae.mods.causal)
        >>> q, k = torch.randn(1, 2, 64, 8), torch.randn(1, 2, 64, 8)
        >>> m = ae.seer.pooled_attention_map(attn, q, k, block_size=16)
        >>> m.shape, bool(torch.allclose(m.sum(-1), torch.ones(1, 2, 4)))
        (torch.Size([1, 2, 4, 4]), True)"""
    _check_block_size(block_size)
    _check_qk(q, k)
    with torch.no_grad():
        if _softmax(attn):
            kd = k.detach()
            return attention_with_pooling(attn, q.detach(), kd, kd, block_size)[1].float()
        B, Hkv, Skv = k.shape[:3]
        qf, kf = q.detach().float(), k.detach().float()
        eye = torch.eye(Skv, device=k.device).expand(B, Hkv, Skv, Skv)
        p = attn.reference(qf, kf, eye)  # P V with V = I: the weights themselves
        Hq, Sq = p.shape[1], p.shape[2]
        pooled = F.max_pool2d(p.reshape(B * Hq, 1, Sq, Skv), block_size, block_size,
                              ceil_mode=True).view(B, Hq, _blocks(Sq, block_size),
                                                   _blocks(Skv, block_size))
        return pooled / pooled.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)


def _pool(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """[B, H, S, D] -> [B, H, nb, 3D]: each block's average, max and min over its rows (the
    last block over the rows it has)."""
    B, H, S, D = x.shape
    nb = _blocks(S, block_size)
    pad = nb * block_size - S
    xf = x.float()
    valid = torch.ones(S, dtype=torch.bool, device=x.device)
    if pad:
        xf = F.pad(xf, (0, 0, 0, pad))
        valid = F.pad(valid, (0, pad))
    xb = xf.view(B, H, nb, block_size, D)
    vb = valid.view(nb, block_size, 1)
    count = vb.sum(1).clamp_min(1)  # [nb, 1]
    avg = xb.sum(3) / count
    mx = xb.masked_fill(~vb, float("-inf")).amax(3)
    mn = xb.masked_fill(~vb, float("inf")).amin(3)
    return torch.cat([avg, mx, mn], -1)


def _rope(x: torch.Tensor, base: float) -> torch.Tensor:
    """Rotary embedding of x [B, H, n, d] at positions 0..n-1 (rotate-half form)."""
    n, d = x.shape[-2], x.shape[-1]
    inv = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    ang = torch.arange(n, device=x.device, dtype=torch.float32)[:, None] * inv
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


class SeerGate(nn.Module):
    """Predicts the block-pooled attention map from pooled Q and K.

    Args:
        heads, kv_heads: query and key heads (kv_heads divides heads: each query head's gate
            reads its group's pooled K).
        head_dim: D of q and k.
        block_size: the attention blocks (64: the kernels' tile).
        hidden: the gate's per-head width (even, for the rotary embedding).
        rope: rotary embedding of the pooled vectors at their block positions.

    ``forward(q, k, causal=True)``: q [B, heads, S, D], k [B, kv_heads, S_kv, D] -> logits
    float32 [B, heads, nq, nk], -inf at blocks a causal query block cannot reach (causal
    needs S == S_kv).

    Example:
        >>> import torch, attention_engine as ae
        >>> gate = ae.seer.SeerGate(heads=4, kv_heads=2, head_dim=8, block_size=16, hidden=16)
        >>> gate(torch.randn(1, 4, 64, 8), torch.randn(1, 2, 64, 8)).shape
        torch.Size([1, 4, 4, 4])"""

    def __init__(self, heads: int, kv_heads: int, head_dim: int, block_size: int = 64,
                 hidden: int = 128, rope: bool = True, rope_base: float = 10000.0):
        super().__init__()
        if min(heads, kv_heads, head_dim, hidden) < 1:
            raise ValueError(f"attention_engine.seer: heads, kv_heads, head_dim and hidden must be "
                             f"positive, got {heads}, {kv_heads}, {head_dim}, {hidden}")
        if heads % kv_heads:
            raise ValueError(f"attention_engine.seer: kv_heads ({kv_heads}) must divide heads "
                             f"({heads})")
        if hidden % 2:
            raise ValueError(f"attention_engine.seer: hidden must be even, got {hidden}")
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.block_size, self.hidden = _check_block_size(block_size), hidden
        self.rope, self.rope_base = rope, rope_base
        std = 1.0 / math.sqrt(3 * head_dim)
        self.wq = nn.Parameter(torch.randn(heads, 3 * head_dim, hidden) * std)
        self.wk = nn.Parameter(torch.randn(kv_heads, 3 * head_dim, hidden) * std)

    def forward(self, q: torch.Tensor, k: torch.Tensor, causal: bool = True) -> torch.Tensor:
        if q.dim() != 4 or k.dim() != 4 or q.shape[1] != self.heads or k.shape[1] != self.kv_heads \
                or q.shape[-1] != self.head_dim or k.shape[-1] != self.head_dim:
            raise ValueError(f"attention_engine.seer: SeerGate({self.heads}, {self.kv_heads}, "
                             f"{self.head_dim}) takes q [B, {self.heads}, S, {self.head_dim}] and "
                             f"k [B, {self.kv_heads}, S_kv, {self.head_dim}], got "
                             f"{list(q.shape)} and {list(k.shape)}")
        if causal and q.shape[2] != k.shape[2]:
            raise ValueError("attention_engine.seer: a causal gate needs as many queries as "
                             f"keys, got {q.shape[2]} and {k.shape[2]}")
        qp = torch.einsum("bhnc,hcd->bhnd", _pool(q, self.block_size), self.wq.float())
        kp = torch.einsum("bhnc,hcd->bhnd", _pool(k, self.block_size), self.wk.float())
        if self.rope:
            qp, kp = _rope(qp, self.rope_base), _rope(kp, self.rope_base)
        kp = kp.repeat_interleave(self.heads // self.kv_heads, 1)
        logits = qp @ kp.transpose(-1, -2) / math.sqrt(self.hidden)
        if causal:
            allowed = _causal_blocks(logits.shape[-2], logits.shape[-1], logits.device)
            logits = logits.masked_fill(~allowed, float("-inf"))
        return logits


def gate_loss(logits: torch.Tensor, target: torch.Tensor, skip_first: float = 0.25) -> torch.Tensor:
    """KL(target || softmax(logits)) of each query block's row, averaged over rows, without
    the first ``skip_first`` of the query blocks (SeerAttention's choice: early rows have few
    blocks to choose from). Blocks where the target is 0 add nothing (also where the logits
    are -inf).

    Example:
        >>> import torch, attention_engine as ae
        >>> target = torch.full((1, 1, 4, 4), 0.25)
        >>> float(ae.seer.gate_loss(torch.zeros(1, 1, 4, 4), target))  # uniform vs uniform
        0.0"""
    if logits.shape != target.shape:
        raise ValueError(f"attention_engine.seer: logits {list(logits.shape)} and target "
                         f"{list(target.shape)} differ")
    if not 0.0 <= skip_first < 1.0:
        raise ValueError(f"attention_engine.seer: skip_first must be in [0, 1), got {skip_first}")
    start = int(logits.shape[-2] * skip_first)
    logp = F.log_softmax(logits.float()[..., start:, :], -1)
    t = target.float()[..., start:, :]
    terms = torch.where(t > 0, t * (t.clamp_min(1e-30).log() - logp), torch.zeros_like(t))
    return terms.sum(-1).mean()


def select_blocks(logits: torch.Tensor, threshold: Optional[float] = None,
                  keep_ratio: Optional[float] = None, causal: bool = True) -> torch.Tensor:
    """The blocks to compute, bool [B, H, nq, nk], from gate logits: those whose gate
    probability exceeds ``threshold``, or in each row the ``keep_ratio`` of the blocks it can
    reach with the highest probability (at least one). Causal: the diagonal block is always
    kept (a query always has its own block's keys) and nothing above it.

    Example:
        >>> import torch, attention_engine as ae
        >>> causal = torch.ones(4, 4, dtype=torch.bool).tril()
        >>> logits = (-torch.arange(4.0)).expand(1, 1, 4, 4).masked_fill(~causal, float("-inf"))
        >>> ae.seer.select_blocks(logits, keep_ratio=0.5)[0, 0].int()  # early blocks + diagonal
        tensor([[1, 0, 0, 0],
                [1, 1, 0, 0],
                [1, 1, 1, 0],
                [1, 1, 0, 1]], dtype=torch.int32)"""
    if (threshold is None) == (keep_ratio is None):
        raise ValueError("attention_engine.seer: give threshold or keep_ratio (one of them)")
    probs = torch.softmax(logits.float(), -1)
    nq, nk = probs.shape[-2:]
    if causal and nq != nk:
        raise ValueError(f"attention_engine.seer: causal selection needs as many query blocks as "
                         f"key blocks, got {nq} and {nk}")
    allowed = (_causal_blocks(nq, nk, probs.device) if causal
               else torch.ones(nq, nk, dtype=torch.bool, device=probs.device))
    if threshold is not None:
        keep = probs > threshold
    else:
        if not 0.0 < keep_ratio <= 1.0:
            raise ValueError(f"attention_engine.seer: keep_ratio must be in (0, 1], got {keep_ratio}")
        reach = allowed.sum(-1)  # [nq]
        k_row = torch.clamp(torch.ceil(reach.float() * keep_ratio).long(), min=1)
        order = probs.masked_fill(~allowed, -1.0).argsort(-1, descending=True)
        rank = torch.empty_like(order)
        rank.scatter_(-1, order, torch.arange(nk, device=probs.device).expand_as(order))
        keep = rank < k_row[:, None]
    keep = keep & allowed
    if causal:
        keep = keep | torch.eye(nq, nk, dtype=torch.bool, device=probs.device)
    return keep


class BlockSparseAttention:
    """A variant that computes only the blocks a bool block tensor keeps.

    ``BlockSparseAttention(score_mod, mask_mod, block_size=64, ...)(q, k, v, blocks)``: blocks
    bool [B or 1, H, nq, nk] with H = Hq (a mask per query head: ``select_blocks``'s result),
    Hkv (per KV head, shared by its group of query heads) or 1, nq = ceil(Sq / block_size),
    nk = ceil(Skv / block_size); a score counts where its block is kept and
    mask_mod keeps it. Forward and backward, every variant; the other arguments are
    ``ae.compile``'s. A query row with no kept block returns 0. The kernels build their table
    of kept tiles from the tensor itself (csrc/ir/block_mask.h), read in place (a dimension of 1
    is broadcast, not copied).

    Example:
        >>> import torch, attention_engine as ae
        >>> sparse = ae.seer.BlockSparseAttention(mask_mod=ae.mods.causal, block_size=16)
        >>> q = k = v = torch.randn(1, 2, 64, 8)
        >>> blocks = torch.ones(1, 1, 4, 4, dtype=torch.bool).tril()
        >>> sparse(q, k, v, blocks).shape
        torch.Size([1, 2, 64, 8])"""

    def __init__(self, score_mod: Optional[Callable] = None, mask_mod: Optional[Callable] = None,
                 block_size: int = 64, normalize: str = "softmax", scale: Optional[float] = None,
                 deterministic: bool = False):
        self.block_size = _check_block_size(block_size)
        self._compile_args = (score_mod, mask_mod, normalize, scale, deterministic)
        self._variants = {}
        # The variant of a per-batch, per-query-head tensor (what select_blocks gives), compiled
        # up front: its kernels are the ones most calls take.
        self._attn = self._variant(True, 1)[0]

    def _variant(self, by_batch: bool, head_div: int, decode: bool = False):
        """The compiled variant whose mask reads blocks[b or 0, h, h // head_div or 0, ...]
        (head_div 1, G or 0; decode: one row of blocks, index 0, that every query shares, a
        lookup the kernels take as a block tensor also GQA-packed: gqa_pack.py) and where its
        block tensor sits among the captured tensors."""
        key = (by_batch, head_div, decode)
        if key not in self._variants:
            score_mod, mask_mod, normalize, scale, deterministic = self._compile_args
            bs = self.block_size
            placeholder = torch.ones(1, 1, 1, 1, dtype=torch.bool)

            def kept(b, h, q_idx, kv_idx):
                head = 0 if head_div == 0 else h if head_div == 1 else h // head_div
                on = placeholder[b if by_batch else 0, head, 0 if decode else q_idx // bs,
                                 kv_idx // bs]
                return on if mask_mod is None else on & mask_mod(b, h, q_idx, kv_idx)
            attn = _compile(score_mod, kept, normalize=normalize, scale=scale,
                            deterministic=deterministic)
            matches = [i for i, t in enumerate(attn.buffers) if t is placeholder]
            assert len(matches) == 1, "the block tensor is one captured tensor of the trace"
            self._variants[key] = (attn, matches[0])
        return self._variants[key]

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, blocks: torch.Tensor,
                 *, return_lse: bool = False):
        if not isinstance(blocks, torch.Tensor) or blocks.dtype != torch.bool or blocks.dim() != 4:
            raise ValueError("attention_engine.seer: blocks must be a bool tensor [B or 1, H, "
                             "nq, nk] (H: Hq, Hkv or 1), got "
                             f"{getattr(blocks, 'dtype', type(blocks).__name__)} "
                             f"{list(blocks.shape) if isinstance(blocks, torch.Tensor) else ''}")
        B, Hq, Sq = q.shape[:3]
        Hkv = k.shape[1]
        nq, nk = _blocks(Sq, self.block_size), _blocks(k.shape[2], self.block_size)
        heads = blocks.shape[1]
        if blocks.shape[0] not in (1, B) or heads not in (1, Hq, Hkv) \
                or tuple(blocks.shape[2:]) != (nq, nk):
            raise ValueError(f"attention_engine.seer: blocks {list(blocks.shape)} do not fit q "
                             f"{list(q.shape)} and k {list(k.shape)} at block size "
                             f"{self.block_size}: expected [{B} or 1, {Hq}, {Hkv} or 1 heads, "
                             f"{nq}, {nk}]")
        head_div = 1 if heads == Hq else 0 if heads == 1 else Hq // Hkv
        attn, slot = self._variant(blocks.shape[0] > 1, head_div)
        buffers = list(attn.buffers)
        buffers[slot] = blocks.to(q.device)
        return run_op(attention_op, q, k, v, buffers, attn.key, attn.normalize, attn.scale,
                      return_lse, attn.deterministic)

    def with_kvcache(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     cache_seqlens, blocks: torch.Tensor, k_new: Optional[torch.Tensor] = None,
                     v_new: Optional[torch.Tensor] = None,
                     block_table: Optional[torch.Tensor] = None, *, return_lse: bool = False,
                     check_lengths: bool = True):
        """Sparse decode: ``CompiledAttention.with_kvcache`` (its arguments, layouts and
        result: q [B, Sq, Hq, D], a contiguous or paged cache, new tokens appended first) over
        the key blocks ``blocks`` keeps. ``blocks`` is bool [B or 1, H, nk] (H: Hkv, a
        selection per KV head shared by its query heads, as SeerAttention's decode; Hq; or 1)
        with nk = ceil(capacity / block_size) (the capacity: S_max, or max_pages x page_size),
        or SeerAttention's index lists, int [B or 1, H, max_selected] of kept blocks padded
        with -1 (entries outside 0 .. nk - 1 select nothing). Key blocks that are not kept are
        never read; a query with no kept key returns 0.

        Example:
            >>> import torch, attention_engine as ae
            >>> sparse = ae.seer.BlockSparseAttention(block_size=16)
            >>> k_cache = v_cache = torch.randn(2, 64, 2, 8)       # [B, S_max, Hkv, D]
            >>> q = torch.randn(2, 1, 4, 8)                        # one query, 4 heads
            >>> picks = torch.tensor([[[0, 2], [1, -1]], [[3, -1], [0, 1]]])  # per KV head
            >>> sparse.with_kvcache(q, k_cache, v_cache, 60, picks).shape
            torch.Size([2, 1, 4, 8])"""
        from .inference import with_kvcache
        if not isinstance(q, torch.Tensor) or q.dim() != 4 or \
                not isinstance(k_cache, torch.Tensor) or k_cache.dim() != 4:
            raise ValueError("attention_engine.seer: with_kvcache needs q [B, Sq, Hq, D] and a "
                             "cache [B, S_max, Hkv, D] or [num_pages, page_size, Hkv, D]")
        B, Hq, Hkv = q.shape[0], q.shape[2], k_cache.shape[2]
        capacity = (k_cache.shape[1] if block_table is None
                    else block_table.shape[-1] * k_cache.shape[1])
        nk = _blocks(capacity, self.block_size)
        if not isinstance(blocks, torch.Tensor) or blocks.dim() != 3 or blocks.dtype not in (
                torch.bool, torch.int32, torch.int64):
            raise ValueError("attention_engine.seer: blocks must be bool [B or 1, H, nk] or int "
                             "index lists [B or 1, H, max_selected] (H: Hkv, Hq or 1), got "
                             f"{getattr(blocks, 'dtype', type(blocks).__name__)} "
                             f"{list(blocks.shape) if isinstance(blocks, torch.Tensor) else ''}")
        heads = blocks.shape[1]
        if blocks.shape[0] not in (1, B) or heads not in (1, Hq, Hkv) or (
                blocks.dtype == torch.bool and blocks.shape[2] != nk):
            raise ValueError(f"attention_engine.seer: blocks {list(blocks.shape)} do not fit q "
                             f"{list(q.shape)} and a cache of {capacity} tokens at block size "
                             f"{self.block_size}: expected [{B} or 1, {Hkv} or {Hq} or 1, "
                             f"{nk if blocks.dtype == torch.bool else 'any count'}]")
        blocks = blocks.to(q.device)
        if blocks.dtype != torch.bool:
            blocks = blocks_from_indices(blocks, nk)
        head_div = 1 if heads == Hq else 0 if heads == 1 else Hq // Hkv
        attn, slot = self._variant(blocks.shape[0] > 1, head_div, decode=True)
        captured = list(attn.buffers)
        captured[slot] = blocks.unsqueeze(2)
        return with_kvcache(_Captured(attn, captured), q, k_cache, v_cache, cache_seqlens, k_new,
                            v_new, block_table, return_lse=return_lse, check_lengths=check_lengths)


def blocks_from_indices(indices: torch.Tensor, num_blocks: int) -> torch.Tensor:
    """SeerAttention's index lists, int [..., max_selected] of kept blocks padded with -1, as a
    bool tensor [..., num_blocks] (on the indices' device, no host read; entries outside
    0 .. num_blocks - 1 select nothing)."""
    # Entries outside the blocks go to the two columns past them: clamped to -1 .. num_blocks,
    # then -1 wrapped to num_blocks + 1 (two kernels where a validity mask and a select took
    # four: a decode step's host time is its launches).
    sink = indices.long().clamp(-1, num_blocks).remainder_(num_blocks + 2)
    out = torch.zeros(*indices.shape[:-1], num_blocks + 2, dtype=torch.bool, device=indices.device)
    return out.scatter_(-1, sink, True)[..., :num_blocks]


class _Captured:
    """A compiled variant seen with other captured tensors (what the inference entry points
    read of it: ``captured`` first, the rest from the variant)."""

    def __init__(self, attn, captured):
        self._attn, self.captured = attn, captured

    def __getattr__(self, name):
        return getattr(self._attn, name)


class SeerAttention(nn.Module):
    """Drop-in causal attention with a learned gate: the gate picks the blocks, block-sparse
    attention computes only those.

    ``forward(q, k, v)``: q [B, heads, S, D], k / v [B, kv_heads, S, D] -> [B, heads, S, Dv]
    (the gate without gradients: it trains through ``distill_loss``, not through the output).
    ``distill_loss(q, k)``: the gate's KL loss against the dense attention's pooled map.
    ``score_mod`` is the attention's (ALiBi, softcap, ...); the blocks kept are
    ``select_blocks(logits, threshold=..., keep_ratio=...)``'s.

    Example:
        >>> import torch, attention_engine as ae
        >>> seer = ae.seer.SeerAttention(heads=2, kv_heads=2, head_dim=8, block_size=16,
        ...                              keep_ratio=0.5, hidden=16)
        >>> q = k = v = torch.randn(1, 2, 64, 8)
        >>> seer(q, k, v).shape
        torch.Size([1, 2, 64, 8])"""

    def __init__(self, heads: int, kv_heads: int, head_dim: int, score_mod: Optional[Callable] = None,
                 block_size: int = 64, keep_ratio: Optional[float] = 0.1,
                 threshold: Optional[float] = None, hidden: int = 128, rope: bool = True):
        super().__init__()
        from . import mods
        self.gate = SeerGate(heads, kv_heads, head_dim, block_size, hidden, rope)
        self.keep_ratio, self.threshold = (None, threshold) if threshold is not None else (keep_ratio, None)
        self.sparse = BlockSparseAttention(score_mod, mods.causal, block_size=block_size)
        self.dense = _compile(score_mod, mods.causal)

    def blocks(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The blocks the gate keeps for these inputs, bool [B, heads, nq, nk]."""
        with torch.no_grad():
            return select_blocks(self.gate(q.detach(), k.detach()), self.threshold, self.keep_ratio)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.sparse(q, k, v, self.blocks(q, k))

    def distill_loss(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        target = pooled_attention_map(self.dense, q, k, self.gate.block_size)
        return gate_loss(self.gate(q.detach(), k.detach()), target)
