"""Context parallelism (ring attention): a compiled variant over a sequence sharded across the
ranks of a torch.distributed process group.

Each rank holds a chunk of Q, K and V. The K/V chunks go around the ring (P2P ops,
``batch_isend_irecv``: gloo on CPU, NCCL on GPUs); each rank attends its queries to every
K/V chunk with the compiled op and merges the partial outputs by their log-sum-exp. The mods
see positions in the whole sequence: the variant's graph is rewritten to add a query and a
key offset, two 0-d captured tensors (positions.with_offsets), so causal, ALiBi, sliding
windows and relative-bias tables mean what they mean unsharded.

Layouts: "contiguous" (rank r holds chunk r of world) and "zigzag" (the sequence cut into
2 * world chunks, rank r holds chunks r and 2 * world - 1 - r: under a causal mask every rank
has the same work). A rank's chunk is a list of pieces, each one range of global positions
(one piece, or two for zigzag); every (query piece, key piece) pair is one op call, and pairs
the mask empties are not computed (_mask_blocks.py).

The backward passes K/V around the ring again with dK/dV accumulators behind them, so each
rank ends with the gradients of its own chunk; each pair's partial attention is recomputed
and differentiated against the merged output's gradient; gradients of captured tensors (a
learnable bias table) are summed over the group.
"""
from __future__ import annotations

import hashlib
import threading
from typing import NamedTuple, Optional

import torch
import torch.distributed as dist

from ._mask_blocks import block_kept
from .api import VariantRef, _variant_of, run_op
from .ops import attention_op
from .positions import with_offsets

LAYOUTS = ("contiguous", "zigzag")
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

_REFS: dict = {}      # trace JSON -> VariantRef of its offsets rewrite
_OFFSETS: dict = {}   # (device, value) -> 0-d int64 tensor (one per value: the kernels'
                      # block-state tables, keyed by the tensors they read, are reused)
_LOCK = threading.Lock()


def _err(msg: str) -> ValueError:
    return ValueError(f"attention_engine.context_parallel: {msg}")


class _Piece(NamedTuple):
    start: int      # first row in the rank's chunk
    length: int
    position: int   # its first row's position in the whole sequence


def _pieces(rank: int, world: int, n: int, layout: str) -> list:
    if layout == "contiguous":
        return [_Piece(0, n, rank * n)]
    c = n // 2
    return [_Piece(0, c, rank * c), _Piece(c, c, (2 * world - 1 - rank) * c)]


def sequence_positions(rank: int, world_size: int, seq_len: int,
                       layout: str = "contiguous") -> torch.Tensor:
    """The positions in the whole sequence (int64 [seq_len // world_size]) of the rows that
    rank holds under a layout: for rotary embeddings, position ids, or putting the chunks
    back together.

    Example:
        >>> import attention_engine as ae
        >>> ae.sequence_positions(0, 2, 8, layout="zigzag").tolist()
        [0, 1, 6, 7]
        >>> ae.sequence_positions(1, 2, 8).tolist()
        [4, 5, 6, 7]
    """
    _check_layout(layout)
    if world_size < 1 or not 0 <= rank < world_size:
        raise _err(f"rank {rank} is not in a group of {world_size}")
    parts = world_size * (2 if layout == "zigzag" else 1)
    if seq_len % parts:
        raise _err(f"a sequence of {seq_len} does not divide into {parts} equal chunks "
                   f"({layout} layout over {world_size} ranks)")
    n = seq_len // world_size
    return torch.cat([torch.arange(p.position, p.position + p.length)
                      for p in _pieces(rank, world_size, n, layout)])


def shard_sequence(x: torch.Tensor, rank: int, world_size: int, layout: str = "contiguous",
                   dim: int = 2) -> torch.Tensor:
    """The rows of x (the whole sequence along ``dim``; [B, H, S, D]: dim 2) that rank holds
    under a layout (contiguous chunks, or zigzag: chunks r and 2 * world - 1 - r of 2 * world).
    Differentiable.

    Example:
        >>> import torch, attention_engine as ae
        >>> x = torch.arange(8).view(1, 1, 8, 1)
        >>> ae.shard_sequence(x, 1, 2, layout="zigzag").flatten().tolist()
        [2, 3, 4, 5]
    """
    pos = sequence_positions(rank, world_size, x.shape[dim], layout)
    if layout == "contiguous":
        return x.narrow(dim, int(pos[0]), pos.numel())
    return x.index_select(dim, pos.to(x.device))


def _check_layout(layout) -> None:
    if layout not in LAYOUTS:
        raise _err(f"layout must be one of {LAYOUTS}, got {layout!r}")


def _offset(value: int, device) -> torch.Tensor:
    key = (torch.device(device), value)
    with _LOCK:
        t = _OFFSETS.get(key)
        if t is None:
            if len(_OFFSETS) >= 4096:
                _OFFSETS.clear()
            with torch.inference_mode(False), torch.no_grad():
                t = _OFFSETS[key] = torch.tensor(value, dtype=torch.int64, device=device)
        return t


def _offsets_ref(trace_json: str) -> VariantRef:
    with _LOCK:
        ref = _REFS.get(trace_json)
        if ref is None:
            rewritten = with_offsets(trace_json)
            ref = _REFS[trace_json] = VariantRef(rewritten, _variant_of(rewritten))
        return ref


class _Ring:
    """One call's plan: the group, the neighbours, the pieces, the rewritten variant."""

    def __init__(self, attn, group, layout, q, k):
        self.group = group
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.next = dist.get_global_rank(group, (self.rank + 1) % self.world)
        self.prev = dist.get_global_rank(group, (self.rank - 1) % self.world)
        self.layout = layout
        self.trace_json = attn._ref.trace_json
        self.key = _offsets_ref(self.trace_json).key
        self.normalize = attn.normalize
        self.softmax = attn.normalize == "softmax"
        self.scale = attn.scale
        self.deterministic = bool(getattr(attn, "deterministic", False))
        self.batch, self.heads = q.shape[0], q.shape[1]
        self.q_pieces = _pieces(self.rank, self.world, q.shape[2], layout)
        self.kv_len = k.shape[2]
        self.acc_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32

    def kv_pieces(self, src: int) -> list:
        return _pieces(src, self.world, self.kv_len, self.layout)

    def kept(self, qp: _Piece, kp: _Piece, buffers, device) -> bool:
        return block_kept(self.trace_json, list(buffers), self.batch, self.heads, qp.position,
                          qp.length, kp.position, kp.length, device)

    def shift(self, tensors, tag: int):
        """Sends tensors to the next rank and receives the previous rank's: (requests, received)."""
        recv = [torch.empty_like(t) for t in tensors]
        ops = []
        for i, (t, r) in enumerate(zip(tensors, recv)):
            ops.append(dist.P2POp(dist.isend, t, self.next, self.group, tag + i))
            ops.append(dist.P2POp(dist.irecv, r, self.prev, self.group, tag + i))
        return dist.batch_isend_irecv(ops), recv


def _wait(pending) -> list:
    reqs, recv = pending
    for r in reqs:
        r.wait()
    return recv


def _rows(x: torch.Tensor, p: _Piece) -> torch.Tensor:
    return x.narrow(2, p.start, p.length)


def _block_forward(ring: _Ring, q, k, v, buffers, qp: _Piece, kp: _Piece):
    """One (query piece, key piece) pair: (out, lse) for softmax, out for normalize="none"."""
    offsets = [_offset(qp.position, q.device), _offset(kp.position, q.device)]
    return run_op(attention_op, q, k, v, list(buffers) + offsets, ring.key, ring.normalize,
                  ring.scale, ring.softmax, ring.deterministic)


def _weight(lse_i: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """exp(lse_i - lse), 0 where the part has nothing (also where the whole row has nothing,
    where exp(-inf - -inf) would be nan)."""
    return torch.where(lse_i == float("-inf"), 0.0, torch.exp(lse_i - lse))


class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ring: _Ring, q, k, v, *buffers):
        acc = ring.acc_dtype
        outs = [None] * len(ring.q_pieces)
        lses = [None] * len(ring.q_pieces)
        kv = [k, v]
        for step in range(ring.world):
            src = (ring.rank - step) % ring.world
            pending = ring.shift(kv, 0) if step < ring.world - 1 else None
            for i, qp in enumerate(ring.q_pieces):
                for kp in ring.kv_pieces(src):
                    if not ring.kept(qp, kp, buffers, q.device):
                        continue
                    res = _block_forward(ring, _rows(q, qp), _rows(kv[0], kp), _rows(kv[1], kp),
                                         buffers, qp, kp)
                    if not ring.softmax:  # normalize="none": the parts add up
                        outs[i] = res.to(acc) if outs[i] is None else outs[i] + res
                        continue
                    o, lse_i = res
                    if outs[i] is None:
                        outs[i], lses[i] = o.to(acc), lse_i
                    else:
                        lse = torch.logaddexp(lses[i], lse_i)
                        outs[i] = (outs[i] * _weight(lses[i], lse).unsqueeze(-1)
                                   + o * _weight(lse_i, lse).unsqueeze(-1))
                        lses[i] = lse
            if pending is not None:
                kv = _wait(pending)
        B, H, Dv = q.shape[0], q.shape[1], v.shape[-1]
        out = torch.cat([o if o is not None else q.new_zeros((B, H, p.length, Dv), dtype=acc)
                         for o, p in zip(outs, ring.q_pieces)], 2).to(q.dtype)
        lse = torch.cat([x if x is not None else
                         q.new_full((B, H, p.length), float("-inf"), dtype=acc)
                         for x, p in zip(lses, ring.q_pieces)], 2)
        ctx.ring = ring
        ctx.buffer_grads = [b.requires_grad for b in buffers]
        ctx.save_for_backward(q, k, v, out, lse, *buffers)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        ring: _Ring = ctx.ring
        q, k, v, out, lse, *buffers = ctx.saved_tensors
        acc = ring.acc_dtype
        wants = ctx.buffer_grads
        dq = torch.zeros(q.shape, dtype=acc, device=q.device)
        dbuf = [torch.zeros(b.shape, dtype=b.dtype, device=b.device) if w else None
                for b, w in zip(buffers, wants)]
        kv = [k, v]
        grads_pending = None
        for step in range(ring.world):
            src = (ring.rank - step) % ring.world
            pending = ring.shift(kv, 0) if step < ring.world - 1 else None
            dk = torch.zeros(k.shape, dtype=acc, device=k.device)
            dv = torch.zeros(v.shape, dtype=acc, device=v.device)
            for qp in ring.q_pieces:
                for kp in ring.kv_pieces(src):
                    if not ring.kept(qp, kp, buffers, q.device):
                        continue
                    g = _block_backward(ring, q, kv, out, lse, dout, dlse, buffers, wants, qp, kp)
                    _rows(dq, qp).add_(g[0])
                    _rows(dk, kp).add_(g[1])
                    _rows(dv, kp).add_(g[2])
                    for j, d in enumerate(g[3]):
                        if d is not None:
                            dbuf[j] += d
            # The accumulators of the chunk held now: this rank's part, plus what the ranks
            # before it added (received during this step's work); then on to the next rank.
            if grads_pending is not None:
                prev_dk, prev_dv = _wait(grads_pending)
                dk, dv = dk + prev_dk, dv + prev_dv
            if ring.world > 1:
                grads_pending = ring.shift([dk, dv], 2)
            if pending is not None:
                kv = _wait(pending)
        if grads_pending is not None:  # the last shift brings each rank its own chunk's
            dk, dv = _wait(grads_pending)
        if ring.world > 1:
            for d in dbuf:
                if d is not None:
                    dist.all_reduce(d, group=ring.group)
        return (None, dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), *dbuf)


def _block_backward(ring: _Ring, q, kv, out, lse, dout, dlse, buffers, wants, qp, kp):
    """Gradients of one pair's part of the merged output: (dq piece, dk piece, dv piece,
    [captured tensors' gradients]). The part enters as exp(lse_i - lse) * o_i, and lse_i
    enters lse: the gradients by o_i and lse_i below are those of the merge."""
    acc = ring.acc_dtype
    with torch.enable_grad():
        q_ = _rows(q, qp).detach().requires_grad_()
        k_ = _rows(kv[0], kp).detach().requires_grad_()
        v_ = _rows(kv[1], kp).detach().requires_grad_()
        bufs = [b.detach().requires_grad_() if w else b for b, w in zip(buffers, wants)]
        res = _block_forward(ring, q_, k_, v_, bufs, qp, kp)
        d_out = _rows(dout, qp).to(acc)
        if ring.softmax:
            o, lse_i = res
            w = _weight(lse_i, _rows(lse, qp))
            d_o = (w.unsqueeze(-1) * d_out).to(o.dtype)
            spread = (d_out * (o.to(acc) - _rows(out, qp).to(acc))).sum(-1)
            d_lse = w * (_rows(dlse, qp).to(acc) + spread)
            outputs, cotangents = (o, lse_i), (d_o, d_lse)
        else:
            outputs, cotangents = (res,), (d_out.to(res.dtype),)
        wanted = [b for b, w in zip(bufs, wants) if w]
        grads = torch.autograd.grad(outputs, [q_, k_, v_] + wanted, cotangents,
                                    allow_unused=True)
    it = iter(grads[3:])
    dbuf = [next(it) if w else None for w in wants]
    dq, dk, dv = (g if g is not None else torch.zeros_like(x)
                  for g, x in zip(grads[:3], (q_, k_, v_)))
    return dq, dk, dv, dbuf


def _comm_device(group, q) -> torch.device:
    backend = str(dist.get_backend(group))
    if backend == "gloo":
        return torch.device("cpu")
    if isinstance(q, torch.Tensor) and q.device.type != "cpu":
        return q.device
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _local_problem(q, k, v, layout: str) -> Optional[str]:
    """What is wrong with this rank's inputs on their own, or None."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            return f"{name} must be a torch.Tensor, got {type(x).__name__}"
        if x.dim() != 4:
            return f"{name} must be [B, H, S_local, D], got shape {list(x.shape)}"
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in _DTYPES:
        return f"q, k, v must share one float dtype, got {q.dtype}, {k.dtype}, {v.dtype}"
    if not (q.device == k.device == v.device):
        return f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}"
    if k.shape[:3] != v.shape[:3] or q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        return (f"q {list(q.shape)}, k {list(k.shape)}, v {list(v.shape)} do not fit: the same "
                "batch, k and v the same heads and length, q and k the same head dim")
    if k.shape[1] == 0 or q.shape[1] % k.shape[1]:
        return f"q's {q.shape[1]} heads are not a multiple of k's {k.shape[1]}"
    if layout == "zigzag" and (q.shape[2] % 2 or k.shape[2] % 2):
        return (f"the zigzag layout holds two equal pieces per rank, so the local lengths must "
                f"be even (q {q.shape[2]}, k {k.shape[2]}): the global sequence must divide "
                "into 2 * world_size chunks")
    return None


def _agree(group, q, k, v, layout: str, trace_json: str, buffers) -> None:
    """Every rank checks its inputs and all ranks compare shapes, dtypes, the variant and the
    captured tensors that want gradients (one all_gather), so that all of them raise the same
    error instead of some of them waiting forever in the ring."""
    problem = _local_problem(q, k, v, layout)
    digest = int.from_bytes(hashlib.sha1(trace_json.encode()).digest()[:7], "little")
    grad_mask = sum(1 << i for i, b in enumerate(buffers) if b.requires_grad)
    if problem is None:
        meta = list(q.shape) + list(k.shape[1:]) + [v.shape[3], _DTYPES.index(q.dtype)]
    else:
        meta = [-1] * 9
    meta = [int(problem is None)] + meta + [LAYOUTS.index(layout), len(buffers), grad_mask,
                                            digest]
    world = dist.get_world_size(group)
    if world == 1:
        if problem:
            raise _err(problem)
        return
    mine = torch.tensor(meta, dtype=torch.int64, device=_comm_device(group, q))
    gathered = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(gathered, mine, group=group)
    rows = [g.tolist() for g in gathered]
    if problem:
        raise _err(problem)
    bad = [r for r, row in enumerate(rows) if not row[0]]
    if bad:
        raise _err(f"rank(s) {bad} of the group refused their inputs (see their error)")
    names = ("B", "Hq", "Sq", "Dqk", "Hkv", "Skv", "Dqk(k)", "Dv", "dtype", "layout",
             "captured tensors", "captured tensors wanting gradients", "variant")
    for j, name in enumerate(names, start=1):
        values = [row[j] for row in rows]
        if len(set(values)) > 1:
            if name == "dtype":
                values = [str(_DTYPES[x]) for x in values]
            elif name == "layout":
                values = [LAYOUTS[x] for x in values]
            elif name == "variant":
                values = ["<the same>" if x == values[0] else "<another>" for x in values]
            raise _err(f"the ranks disagree on {name}: {values} (by group rank); every rank "
                       "runs the same variant on chunks of the same shape")


def context_parallel(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group=None, *,
                     layout: str = "contiguous", return_lse: bool = False):
    """Runs a compiled variant on a sequence sharded across the ranks of a process group
    (ring attention): call it on every rank of ``group`` with that rank's chunk.

    Args:
        attn: an ``ae.compile`` result or an ``ae.Attention`` module, normalize="softmax"
            (parts merged by their log-sum-exp) or "none" (parts added up).
        q: [B, Hq, S_local, Dqk], k: [B, Hkv, S_local_kv, Dqk], v: [B, Hkv, S_local_kv, Dv]:
            this rank's rows of the whole sequence (``ae.shard_sequence`` cuts them); the
            same shapes on every rank.
        group: a ``torch.distributed`` process group (None: the default one). Gloo on CPU,
            NCCL on GPUs; a group of one gives the plain call.
        layout: "contiguous" (rank r holds chunk r) or "zigzag" (chunks r and 2 * world - 1 - r
            of 2 * world: the same work on every rank under a causal mask).
        return_lse: also return the rows' log-sum-exp [B, Hq, S_local] (softmax only).

    Returns: this rank's rows of the output, [B, Hq, S_local, Dv] (and the lse). The mods see
    positions in the whole sequence. Differentiable: gradients reach this rank's q, k, v,
    and the captured tensors (summed over the group, so every rank holds the whole
    gradient); every rank of the group must run the backward.

    Example:
        >>> import os, tempfile, torch, torch.distributed as dist, attention_engine as ae
        >>> dist.init_process_group("gloo", rank=0, world_size=1,
        ...     init_method="file://" + os.path.join(tempfile.mkdtemp(), "pg"))
        >>> attn = ae.compile(mask_mod=ae.mods.causal)
        >>> q = k = v = torch.randn(1, 2, 16, 8)
        >>> torch.equal(ae.context_parallel(attn, q, k, v), attn(q, k, v))  # a group of one
        True
        >>> dist.destroy_process_group()
    """
    if not hasattr(attn, "_ref") or not hasattr(attn, "normalize"):
        raise TypeError(f"attention_engine.context_parallel: attn must be an ae.compile result "
                        f"or an ae.Attention module, got {type(attn).__name__}")
    if not (isinstance(attn.normalize, str) and attn.normalize in ("softmax", "none")):
        raise _err("only normalize='softmax' (parts merged by their log-sum-exp) and "
                   "normalize='none' (parts added) split over key chunks; a custom row "
                   f"normalization ({attn.normalize!r}) needs the whole row")
    _check_layout(layout)
    if return_lse and attn.normalize == "none":
        raise _err("return_lse=True needs normalize='softmax' (this variant uses "
                   "normalize='none', which has no log-sum-exp)")
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("attention_engine.context_parallel: torch.distributed is not "
                           "initialized: call torch.distributed.init_process_group first "
                           "(a group of one for a single process)")
    group = dist.group.WORLD if group is None else group
    buffers = list(attn.captured if hasattr(attn, "captured") else attn.buffers)
    _agree(group, q, k, v, layout, attn._ref.trace_json, buffers)
    ring = _Ring(attn, group, layout, q, k)
    out, lse = _RingAttention.apply(ring, q, k.contiguous(), v.contiguous(), *buffers)
    return (out, lse) if return_lse else out
