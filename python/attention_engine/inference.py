"""Inference entry points of a compiled variant: packed sequences of different lengths
(``varlen``) and attention against a KV cache, contiguous or paged (``with_kvcache``).

Conventions follow FlashAttention's ``flash_attn_varlen_func`` / ``flash_attn_with_kvcache``
(tokens first: [tokens, heads, dim]) and FlashInfer's paged layout. In both, the mods see
positions within the sequence: ``b`` is the sequence, ``kv_idx`` a key's position and ``q_idx``
a query's, the queries being a sequence's last tokens (a decode query's ``q_idx`` is
``length - Sq + i``), so one mask_mod / score_mod gives the same answer in training, prefill
and decode.

How it runs today: with_kvcache's sequences (varlen's with AE_VARLEN=padded) are padded into
one batch and the variant's graph rewritten to read each row's first query position and key
count (positions.py); with grouped-query attention and few queries per sequence (decode) the
query heads of a group are packed into one head's rows (gqa_pack.py); the fused kernels (or the
reference executor) run that as any variant with captured tensors, and the forward splits long
key ranges across SMs when the query tiles alone would leave SMs idle (split-KV, the
planner's). Correct for every variant, forward and backward.

The rewrite's key bound kv_idx < kv_len[b] is recognized by the forward (csrc/ir/length_bound.h)
and becomes the kernels' KV layout: each sequence's key count read on the device, its blocks
past it never visited, and no mask left where the variant had none. Without autograd a paged
cache is read in place (the attention_paged op: the sm90 forward, or the sm80 forward and
decode templates, address keys through the page table); with autograd it is gathered into a
contiguous one per call. Lengths on the GPU are read on the host (one synchronization per
call) unless check_lengths=False. varlen runs on the attention_varlen op: the forward kernels
address each sequence's rows through cu_seqlens (no padding), and so do the backward kernels
(attention_varlen_backward); AE_VARLEN=padded|packed picks the older routes.
"""
from __future__ import annotations

import os
import threading
from typing import Optional

import torch

from .api import VariantRef, _variant_of, run_op
from .gqa_pack import gqa_packed, inherit_autotune, pack_shape
from .ops import attention_op, paged_op, varlen_op
from .positions import with_packed_sequences, with_positions

_POSITIONED: dict = {}  # (trace JSON, GQA packing) -> VariantRef of its rewrite
_LOCK = threading.Lock()


def _positioned(attn, pack=None, sq=None) -> VariantRef:
    """The positions rewrite of attn's graph (sq: the KV cache's, every row's queries its last
    sq tokens); pack (group, sq): also GQA-packed."""
    trace_json = attn._ref.trace_json
    with _LOCK:
        ref = _POSITIONED.get((trace_json, pack, sq))
        if ref is None:
            rewritten = with_positions(trace_json, sq)
            if pack is not None:
                rewritten = gqa_packed(rewritten, *pack)
            ref = _POSITIONED[(trace_json, pack, sq)] = VariantRef(rewritten,
                                                                   _variant_of(rewritten))
        return ref


def _packed_sequences_ref(attn) -> VariantRef:
    """attn's graph rewritten for varlen's packed route (positions.with_packed_sequences)."""
    trace_json = attn._ref.trace_json
    with _LOCK:
        ref = _POSITIONED.get((trace_json, "packed sequences"))
        if ref is None:
            rewritten = with_packed_sequences(trace_json)
            ref = _POSITIONED[(trace_json, "packed sequences")] = VariantRef(
                rewritten, _variant_of(rewritten))
        return ref


def _varlen_route() -> str:
    """"kernel" (the attention_varlen op: its forward and backward kernels address each
    sequence's rows through cu_seqlens), "padded" (the sequences padded into a batch;
    GQA-packed at few queries) or "packed" (back to back in one batch row, each query masked
    to its own sequence's keys). AE_VARLEN=kernel|padded|packed chooses; else kernel (on the
    H200 2.1-3.4x the padded route's rate: bench/RESULTS.md, 2026-12-05). The kernel route
    takes softmax and none, not deterministic backwards: those take the packed route."""
    env = os.environ.get("AE_VARLEN", "")
    if env not in ("", "kernel", "padded", "packed"):
        raise _err(f"AE_VARLEN must be 'kernel', 'padded' or 'packed', got {env!r}")
    return env or "kernel"


def _one_row(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(0, 1).unsqueeze(0)  # [T, H, D] -> [1, H, T, D]


def _packed_sequence_buffers(cq, ck, total_q: int, total_k: int):
    """The packed route's four captured tensors (positions.with_packed_sequences) from the
    cumulative lengths (int64), without a host read."""
    dev, n = cq.device, cq.numel() - 1
    lq_t, lk_t = cq[1:] - cq[:-1], ck[1:] - ck[:-1]
    seq_q = torch.repeat_interleave(torch.arange(n, device=dev), lq_t, output_size=total_q)
    seq_k = torch.repeat_interleave(torch.arange(n, device=dev), lk_t, output_size=total_k)
    # A query's position in its sequence: the queries are the sequence's last tokens.
    q_pos = torch.arange(total_q, device=dev) - cq[:-1][seq_q] + (lk_t - lq_t)[seq_q]
    k_base = ck[:-1][seq_q]
    return [seq_q, q_pos, k_base, seq_k]


def _run_packed_sequences(attn, q, k, v, cq, ck, return_lse):
    """varlen's packed route: q [total_q, Hq, D], k / v [total_k, Hkv, D] as one batch row."""
    ref = _packed_sequences_ref(attn)
    inherit_autotune(getattr(attn, "autotune", "off"), ref.key)
    captured = attn.captured if hasattr(attn, "captured") else attn.buffers
    buffers = list(captured) + _packed_sequence_buffers(cq, ck, q.shape[0], k.shape[0])
    res = run_op(attention_op, _one_row(q), _one_row(k), _one_row(v), buffers, ref.key,
                 attn.normalize, attn.scale, return_lse, getattr(attn, "deterministic", False))
    out, lse = res if return_lse else (res, None)
    out = out[0].transpose(0, 1)  # [total_q, Hq, Dv]
    return (out, lse[0]) if return_lse else out  # lse [Hq, total_q], as FlashAttention


def _run_varlen_kernel(attn, q, k, v, cq, ck, lq_t, lk_t, wq, wk, return_lse):
    """varlen's kernel route: the attention_varlen op on the positions rewrite (its key bound
    is the op's lengths)."""
    ref = _positioned(attn)
    inherit_autotune(getattr(attn, "autotune", "off"), ref.key)
    captured = attn.captured if hasattr(attn, "captured") else attn.buffers
    buffers = list(captured) + [lk_t - lq_t, lk_t]
    return run_op(varlen_op, q, k, v, buffers, ref.key, attn.normalize, attn.scale, return_lse,
                  extra=(cq.to(torch.int32), ck.to(torch.int32), int(wq), int(wk)))


def _varlen_setup(ctx, inputs, output):
    q, k, v, buffers, variant, scale, cu_q, cu_k, max_q, max_k = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu_q, cu_k, *buffers)
    ctx.variant, ctx.scale, ctx.max_q, ctx.max_k = variant, scale, max_q, max_k


def _varlen_backward(ctx, dout, dlse):
    q, k, v, out, lse, cu_q, cu_k, *buffers = ctx.saved_tensors
    buffer_grads = [bool(b.requires_grad) for b in buffers]
    if dout is None:
        dout = torch.zeros_like(out)
    dq, dk, dv, dbuf = torch.ops.attention_engine.attention_varlen_backward(
        dout, dlse, q, k, v, out, lse, buffers, ctx.variant, ctx.scale, buffer_grads, cu_q, cu_k,
        ctx.max_q, ctx.max_k)
    needs = ctx.needs_input_grad
    return (dq if needs[0] else None, dk if needs[1] else None, dv if needs[2] else None,
            [g if want else None for g, want in zip(dbuf, buffer_grads)]) + (None,) * 6


torch.library.register_autograd("attention_engine::attention_varlen", _varlen_backward,
                                setup_context=_varlen_setup)


def _err(msg: str) -> ValueError:
    return ValueError(f"attention_engine: {msg}")


def _check_tensor(name: str, x, dim: int, shape_doc: str):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"attention_engine: {name} must be a torch.Tensor {shape_doc}, got "
                        f"{type(x).__name__}")
    if x.dim() != dim:
        raise _err(f"{name} must be {shape_doc}, got shape {list(x.shape)}")


def _int_vector(name: str, x, n: Optional[int], device, keep_int32: bool = False) -> torch.Tensor:
    if isinstance(x, int) and not isinstance(x, bool) and n is not None:
        x = torch.full((n,), x, dtype=torch.int64)
    if not isinstance(x, torch.Tensor) or x.dim() != 1 or x.dtype not in (torch.int32, torch.int64):
        raise _err(f"{name} must be a 1-D int32 or int64 tensor"
                   f"{'' if n is None else f' of {n} entries (or an int)'}, got "
                   f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}"
                   f"{list(x.shape) if isinstance(x, torch.Tensor) else ''}")
    if n is not None and x.numel() != n:
        raise _err(f"{name} has {x.numel()} entries for a batch of {n}")
    # keep_int32: int32 stays (a cast is a kernel launch per decode step; the kernels and the
    # reference read either)
    return x.to(device=device, dtype=x.dtype if keep_int32 else torch.int64)


def _run(attn, q, k, v, q_start, kv_len, return_lse, block_table=None):
    """attn: a CompiledAttention or an Attention module (whose captured tensors are read as
    registered now). q [B, Hq, Sq, D], k / v [B, Hkv, Skv, D]; with block_table (int32 [B,
    max_pages]) k / v are pages [num_pages, Hkv, page_size, D] (the attention_paged op: no
    autograd)."""
    B, Hq, Sq, D = q.shape
    Hkv = k.shape[1] if k.dim() == 4 and k.shape[1] > 0 else Hq
    pack = pack_shape(Hq, Hkv, Sq, D)
    group = pack[0] if pack else 1
    # q_start None: every row's queries are its last Sq tokens (a KV cache), in the graph
    ref = _positioned(attn, pack, Sq if q_start is None else None)
    inherit_autotune(getattr(attn, "autotune", "off"), ref.key)
    captured = attn.captured if hasattr(attn, "captured") else attn.buffers
    buffers = list(captured) + ([kv_len] if q_start is None else [q_start, kv_len])
    if pack is not None:  # row g * Sq + s of KV head j is query s of head j * group + g
        q = q.reshape(B, Hkv, group * Sq, D)
    if block_table is not None:
        res = run_op(paged_op, q, k, v, buffers, ref.key, attn.normalize, attn.scale, return_lse,
                     extra=(block_table,))
    else:
        res = run_op(attention_op, q, k, v, buffers, ref.key, attn.normalize, attn.scale,
                     return_lse, getattr(attn, "deterministic", False))
    if pack is None:
        return res
    out, lse = res if return_lse else (res, None)
    out = out.reshape(B, Hq, Sq, out.shape[-1])
    return (out, lse.reshape(B, Hq, Sq)) if return_lse else out


def _pad(x: torch.Tensor, lengths: torch.Tensor, width: int):
    """[total, H, D] -> [n, H, width, D]: row j of sequence i is token cu[i] + j where
    j < lengths[i] (the sequences back to back, in order), zeros after. The tokens are copied
    to their padded rows (index_copy), so the backward gathers them back; a gather from an
    appended zero row instead had every padding row's gradient added atomically into that one
    row (varlen fwd+bwd at 5 TFLOPS with random lengths, bench/varlen_bench.py)."""
    n, dev = lengths.numel(), x.device
    seq = torch.repeat_interleave(torch.arange(n, device=dev), lengths, output_size=x.shape[0])
    starts = torch.cumsum(lengths, 0) - lengths
    dest = seq * width + torch.arange(x.shape[0], device=dev) - starts[seq]  # no nonzero: no sync
    padded = x.new_zeros((n * width,) + tuple(x.shape[1:])).index_copy(0, dest, x)
    return padded.view(n, width, *x.shape[1:]).transpose(1, 2)


def varlen(attn, q, k, v, cu_seqlens_q, cu_seqlens_k,
           max_seqlen_q: Optional[int] = None, max_seqlen_k: Optional[int] = None, *,
           return_lse: bool = False, check_lengths: bool = True):
    _check_tensor("q", q, 3, "[total_q, Hq, D]")
    _check_tensor("k", k, 3, "[total_k, Hkv, D]")
    _check_tensor("v", v, 3, "[total_k, Hkv, Dv]")
    if k.shape[0] != v.shape[0]:
        raise _err(f"k and v must have the same number of tokens, got {k.shape[0]} and {v.shape[0]}")
    dev = q.device
    cq = _int_vector("cu_seqlens_q", cu_seqlens_q, None, None)
    ck = _int_vector("cu_seqlens_k", cu_seqlens_k, None, None)
    if cq.numel() != ck.numel() or cq.numel() < 2:
        raise _err(f"cu_seqlens_q and cu_seqlens_k must both have n + 1 >= 2 entries (n "
                   f"sequences), got {cq.numel()} and {ck.numel()}")
    # The lengths are read on the host to check them and to size the launch: a synchronization
    # where they lie on the GPU, none where they lie on the CPU. check_lengths=False reads
    # nothing (the maxima given: FlashAttention's contract).
    on_host = cq.device.type == "cpu" and ck.device.type == "cpu"
    if on_host:  # (pinned memory is copied asynchronously: not from the caller's tensors)
        cq = cq.clone() if cq.is_pinned() else cq
        ck = ck.clone() if ck.is_pinned() else ck
    if check_lengths:
        wq, wk = _checked_lengths(q, k, cq, ck, max_seqlen_q, max_seqlen_k)
    else:
        if max_seqlen_q is None or max_seqlen_k is None:
            raise _err("varlen(check_lengths=False) needs max_seqlen_q and max_seqlen_k: the "
                       "lengths are not read back")
        wq, wk = int(max_seqlen_q), int(max_seqlen_k)
        if wq < 0 or wk < 0:
            raise _err(f"max_seqlen_q and max_seqlen_k must be >= 0; got {wq} and {wk}")
    cq = cq.to(dev, non_blocking=on_host)
    ck = ck.to(dev, non_blocking=on_host)
    lq_t = cq[1:] - cq[:-1]
    lk_t = ck[1:] - ck[:-1]
    n = cq.numel() - 1
    route = _varlen_route()
    if (route == "kernel" and not getattr(attn, "deterministic", False)
            and isinstance(attn.normalize, str)):
        # (else the packed route: deterministic, its backward called with the flag; a custom
        # normalization, whose statistic has no value that empties a padding row)
        return _run_varlen_kernel(attn, q, k, v, cq, ck, lq_t, lk_t, wq, wk, return_lse)
    if route != "padded" and q.shape[0] > 0:  # no queries at all: the padded route's empty call
        return _run_packed_sequences(attn, q, k, v, cq, ck, return_lse)
    qp, kp, vp = _pad(q, lq_t, wq), _pad(k, lk_t, wk), _pad(v, lk_t, wk)
    res = _run(attn, qp, kp, vp, lk_t - lq_t, lk_t, return_lse)
    out, lse = res if return_lse else (res, None)
    # The valid rows back in token order: token t of sequence b is padded row t - cq[b].
    seq = torch.repeat_interleave(torch.arange(n, device=dev), lq_t, output_size=q.shape[0])
    row = torch.arange(q.shape[0], device=dev) - cq[:-1][seq]
    out = out.transpose(1, 2)[seq, row]  # [total_q, Hq, Dv]
    if not return_lse:
        return out
    return out, lse.transpose(1, 2)[seq, row].transpose(0, 1)  # [Hq, total_q], as FlashAttention


def _checked_lengths(q, k, cq, ck, max_seqlen_q, max_seqlen_k):
    """The longest query and key sequences of cumulative lengths cq / ck (read on the host),
    after checking them against the token counts and the maxima given."""
    hq, hk = cq.tolist(), ck.tolist()
    for name, c, total in (("cu_seqlens_q", hq, q.shape[0]), ("cu_seqlens_k", hk, k.shape[0])):
        if c[0] != 0 or any(b < a for a, b in zip(c, c[1:])) or c[-1] != total:
            raise _err(f"{name} must start at 0, never decrease and end at the token count "
                       f"{total}, got {c if len(c) <= 12 else c[:6] + ['...'] + c[-3:]}")
    lq = [b - a for a, b in zip(hq, hq[1:])]
    lk = [b - a for a, b in zip(hk, hk[1:])]
    bad = [i for i, (a, b) in enumerate(zip(lq, lk)) if a > b]
    if bad:
        i = bad[0]
        raise _err(f"sequence {i} has {lq[i]} queries but {lk[i]} keys: the queries are a "
                   "sequence's last tokens, so there may be at most as many as keys")
    wq, wk = max(lq), max(lk)
    for name, given, need in (("max_seqlen_q", max_seqlen_q, wq), ("max_seqlen_k", max_seqlen_k, wk)):
        if given is not None and given < need:
            raise _err(f"{name}={given} is less than the longest sequence ({need})")
    return wq, wk


def _first_columns(k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether v is a view of k's first v.shape[-1] columns (the same memory, MLA's V in K)."""
    return (v.dim() == k.dim() and v.device == k.device and v.data_ptr() == k.data_ptr()
            and v.shape[:-1] == k.shape[:-1] and v.shape[-1] <= k.shape[-1]
            and v.stride() == k.stride())


def _append(cache: torch.Tensor, new: torch.Tensor, lengths: torch.Tensor, block_table,
            capacity: int):
    """Writes new [B, Sn, H, D] at positions lengths[b] + i of the cache (in place). Positions
    are clamped into the cache (unchecked lengths: no out-of-bounds write)."""
    B, Sn = new.shape[:2]
    pos = lengths[:, None] + torch.arange(Sn, device=new.device)[None, :]  # [B, Sn]
    pos = pos.clamp(0, capacity - 1)
    with torch.no_grad():
        if block_table is None:
            cache[torch.arange(B, device=new.device)[:, None], pos] = new
        else:
            ps = cache.shape[1]
            page = block_table.gather(1, pos // ps).long().clamp(0, cache.shape[0] - 1)
            cache[page, pos % ps] = new


def with_kvcache(attn, q, k_cache, v_cache, cache_seqlens, k_new=None,
                 v_new=None, block_table=None, *, return_lse: bool = False,
                 check_lengths: bool = True):
    _check_tensor("q", q, 4, "[B, Sq, Hq, D]")
    B, Sq = q.shape[:2]
    paged = block_table is not None
    layout = "[num_pages, page_size, Hkv, D]" if paged else "[B, S_max, Hkv, D]"
    _check_tensor("k_cache", k_cache, 4, layout)
    _check_tensor("v_cache", v_cache, 4, layout.replace("D]", "Dv]"))
    if k_cache.shape[:3] != v_cache.shape[:3]:
        raise _err(f"k_cache and v_cache must agree in all but the last dim, got "
                   f"{list(k_cache.shape)} and {list(v_cache.shape)}")
    dev = q.device
    lens = _int_vector("cache_seqlens", cache_seqlens, B, dev, keep_int32=True)
    if paged:
        if (not isinstance(block_table, torch.Tensor) or block_table.dim() != 2
                or block_table.dtype not in (torch.int32, torch.int64) or block_table.shape[0] != B):
            raise _err(f"block_table must be an int32 [B={B}, max_pages] tensor, got "
                       f"{getattr(block_table, 'dtype', type(block_table).__name__)}"
                       f"{list(block_table.shape) if isinstance(block_table, torch.Tensor) else ''}")
        block_table = block_table.to(device=dev)
        capacity = block_table.shape[1] * k_cache.shape[1]
    else:
        if k_cache.shape[0] != B:
            raise _err(f"k_cache has batch {k_cache.shape[0]}, q has {B}")
        capacity = k_cache.shape[1]
    # V in K's memory (MLA's latent cache, v_cache = k_cache[..., :Dv]): the new tokens' V is
    # their K's first columns, written with K (v_new None, or that view of k_new).
    v_in_k = _first_columns(k_cache, v_cache)
    if v_in_k and isinstance(k_new, torch.Tensor) and k_new.dim() == 4:
        if v_new is not None and not (isinstance(v_new, torch.Tensor) and _first_columns(k_new, v_new)):
            raise _err("v_cache is k_cache's first columns (the same memory), so v_new must be "
                       "k_new's first columns too (k_new[..., :Dv]) or None")
        v_new = k_new[..., :v_cache.shape[-1]]
    if (k_new is None) != (v_new is None):
        raise _err("k_new and v_new go together: pass both or neither")
    n_new = 0
    if k_new is not None:
        _check_tensor("k_new", k_new, 4, "[B, S_new, Hkv, D]")
        _check_tensor("v_new", v_new, 4, "[B, S_new, Hkv, Dv]")
        if (k_new.shape[0] != B or v_new.shape[:2] != k_new.shape[:2]
                or k_new.shape[2:] != k_cache.shape[2:] or v_new.shape[2:] != v_cache.shape[2:]):
            raise _err(f"k_new {list(k_new.shape)} / v_new {list(v_new.shape)} do not fit the "
                       f"cache {list(k_cache.shape)} / {list(v_cache.shape)} and batch {B}")
        n_new = k_new.shape[1]
    # Everything the attention call would refuse, refused before the cache is written.
    if q.dtype != k_cache.dtype or q.device != k_cache.device or v_cache.device != k_cache.device \
            or v_cache.dtype != k_cache.dtype:
        raise _err(f"q ({q.dtype}, {q.device}) and the cache ({k_cache.dtype}, {k_cache.device}; "
                   f"v {v_cache.dtype}, {v_cache.device}) must share dtype and device")
    if k_new is not None and (k_new.dtype != k_cache.dtype or v_new.dtype != v_cache.dtype
                              or k_new.device != k_cache.device or v_new.device != v_cache.device):
        raise _err(f"k_new / v_new ({k_new.dtype}, {k_new.device} / {v_new.dtype}, "
                   f"{v_new.device}) must have the cache's dtype and device ({k_cache.dtype}, "
                   f"{k_cache.device})")
    if q.shape[-1] != k_cache.shape[-1] or q.shape[2] % k_cache.shape[2]:
        raise _err(f"q {list(q.shape)} does not fit the cache {list(k_cache.shape)}: the same "
                   "head dim, and query heads a multiple of the cache's heads")
    if return_lse and isinstance(attn.normalize, str) and attn.normalize == "none":
        raise _err("return_lse=True needs a row statistic: normalize='softmax' or a "
                   "Normalizer (this variant uses normalize='none')")
    # Autograd only where something asks for gradients (grad mode on and a tensor requiring
    # them): otherwise the no-grad routes (no clone of the cache; check_lengths=False honored).
    captured = attn.captured if hasattr(attn, "captured") else attn.buffers
    grad = torch.is_grad_enabled() and any(
        isinstance(t, torch.Tensor) and t.requires_grad for t in (q, k_new, v_new, *captured))
    table32 = None
    if paged and not grad:  # the kernels read the pages where they lie (attention_paged)
        table32 = block_table if block_table.dtype == torch.int32 else block_table.to(torch.int32)
    if not check_lengths and not grad:  # nothing read back: the whole cache, as it lies
        return _attend_in_place(attn, q, k_cache, v_cache, lens, k_new, v_new, n_new, capacity,
                                return_lse, block_table, table32, v_in_k)
    host = lens.tolist()  # one synchronization: bounds, and the keys to read
    total = [n + n_new for n in host]
    for b, (n, t) in enumerate(zip(host, total)):
        if n < 0 or t > capacity:
            raise _err(f"sequence {b}: cache_seqlens {n} + {n_new} new tokens does not fit the "
                       f"cache's {capacity} positions")
        if t < Sq:
            raise _err(f"sequence {b} has {t} tokens but {Sq} queries: the queries are a "
                       "sequence's last tokens (with k_new, the new ones)")
    width = max(total)
    if paged:
        ps = k_cache.shape[1]
        pages = -(-width // ps)
        used = block_table[:, :pages]
        need = (torch.arange(pages, device=dev)[None, :] * ps) < torch.tensor(total, device=dev)[:, None]
        if bool(((used < 0) | (used >= k_cache.shape[0]))[need].any()):
            raise _err(f"block_table has page indices outside [0, {k_cache.shape[0]}) for "
                       "positions a sequence uses")
    if not grad:  # the part in use only: the pages it names, the positions up to width
        if paged:
            return _attend_in_place(attn, q, k_cache, v_cache, lens, k_new, v_new, n_new,
                                    capacity, return_lse, block_table, table32[:, :pages], v_in_k)
        return _attend_in_place(attn, q, k_cache[:, :width], v_cache[:, :width], lens, k_new,
                                v_new, n_new, width, return_lse, None, None, v_in_k)
    # Autograd: the new tokens written into the cache, then entering the attention through an
    # out-of-place copy (their gradients flow), so that no input of this call is a view of the
    # cache a later call writes into; a paged cache gathered.
    if n_new:
        _append(k_cache, k_new, lens, block_table, capacity)
        if not v_in_k:  # (else written with K)
            _append(v_cache, v_new, lens, block_table, capacity)
    if paged:
        used = used.clamp(0, k_cache.shape[0] - 1)  # pages past a sequence's end: masked
        k = k_cache[used].flatten(1, 2)[:, :width]
        v = v_cache[used].flatten(1, 2)[:, :width]
    else:
        k, v = k_cache[:, :width], v_cache[:, :width]
    k, v = k.detach().clone(), v.detach().clone()
    if n_new:
        rows = torch.arange(B, device=dev)[:, None]
        pos = lens[:, None] + torch.arange(n_new, device=dev)[None, :]
        k = k.index_put((rows, pos), k_new)
        v = v.index_put((rows, pos), v_new)
    res = _run(attn, q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None, lens + n_new,
               return_lse)
    return _cache_result(res, return_lse)


def _cache_result(res, return_lse):
    """_run's [B, Hq, Sq, Dv] output as with_kvcache returns it, [B, Sq, Hq, Dv] (lse [B, Hq,
    Sq] as it is)."""
    if return_lse:
        return res[0].transpose(1, 2), res[1]
    return res.transpose(1, 2)


def _attend_in_place(attn, q, k_cache, v_cache, lens, k_new, v_new, n_new, capacity,
                     return_lse, block_table, table32, v_in_k=False):
    """with_kvcache without autograd: the new tokens appended, then the cache attended where it
    lies (table32: the int32 page table the attention_paged op reads; block_table: the one the
    append writes through). Nothing is read back to the host by the fused kernels: they take
    kv_len[b] from the device as their KV layout (csrc/ir/length_bound.h: the positions
    rewrite's bound kv_idx < kv_len[b]), clamped into the cache. Unchecked (check_lengths=False),
    lengths or page indices out of range give wrong answers, never an out-of-bounds access;
    appended tokens at such positions land in clamped slots (another sequence's, for a bad page
    entry): the caller vouches for them. (The reference executor, for dtypes or GPUs without a
    kernel, reads its index checks back and may refuse such values.)"""
    if n_new:
        _append(k_cache, k_new, lens, block_table, capacity)
        if not v_in_k:  # (else written with K: v_cache is its first columns)
            _append(v_cache, v_new, lens, block_table, capacity)
    kv_len = lens + n_new if n_new else lens
    return _cache_result(_run(attn, q.transpose(1, 2), k_cache.transpose(1, 2),
                              v_cache.transpose(1, 2), None, kv_len, return_lse, table32),
                         return_lse)
