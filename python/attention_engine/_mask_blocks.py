"""Whether a variant's mask keeps anything in a block of (query, key) positions, read from its
trace: context parallelism skips the blocks a mask empties (under causal, a rank's queries
against a later rank's keys) instead of computing them.

The mask's part of the graph is evaluated with torch over broadcast index tensors, as the
reference executor does (csrc/torch/graph_eval.cpp), for the ops whose value is exact in
int64 and bool. A mask that uses anything else (floats, the score, an op not listed here)
gets no skipping: "kept" is always a safe answer, since a block with nothing kept adds
nothing to the merge. Answers for masks that read no captured tensor are cached.
"""
from __future__ import annotations

import json
import operator
import threading
from typing import Optional

import torch

_MAX_ELEMENTS = 1 << 24  # query rows evaluated at once: at most this many elements
_CACHE_LIMIT = 4096

_ARITH = {"add": operator.add, "sub": operator.sub, "mul": operator.mul,
          "floordiv": lambda a, b: torch.div(a, b, rounding_mode="floor"),
          "mod": torch.remainder}
_CMP = {"lt": torch.lt, "le": torch.le, "gt": torch.gt, "ge": torch.ge, "eq": torch.eq,
        "ne": torch.ne}
_LOGIC = {"and": operator.and_, "or": operator.or_, "xor": operator.xor}


class _GiveUp(Exception):
    """The mask uses something this evaluator does not reproduce exactly."""


class _MaskProgram:
    """The nodes the mask output depends on, in order."""

    def __init__(self, trace_json: str):
        g = json.loads(trace_json)
        self.nodes = g["nodes"]
        self.buffers = g["buffers"]
        self.output: Optional[int] = g["outputs"].get("mask")
        needed = set()
        if self.output is not None:
            stack = [self.output]
            while stack:
                i = stack.pop()
                if i not in needed:
                    needed.add(i)
                    stack.extend(self.nodes[i].get("args", []))
        self.order = sorted(needed)
        self.reads_buffers = any(self.nodes[i]["op"] == "load" for i in self.order)

    def evaluate(self, params: dict, buffers: list) -> torch.Tensor:
        v: dict = {}
        for i in self.order:
            v[i] = _node(self.nodes[i], [v[a] for a in self.nodes[i].get("args", [])],
                         params, buffers)
        out = v[self.output]
        if out.dtype != torch.bool:
            raise _GiveUp
        return out


def _as_int(x: torch.Tensor) -> torch.Tensor:
    return x.long() if x.dtype == torch.bool else x


def _node(n: dict, a: list, params: dict, buffers: list) -> torch.Tensor:
    op = n["op"]
    if op == "param":
        if n["name"] not in params:
            raise _GiveUp  # the score, or a normalization's statistic
        return params[n["name"]]
    if op == "const":
        if n["dtype"] not in ("int", "bool"):
            raise _GiveUp
        dev = params["b"].device
        return torch.tensor(n["value"], dtype=torch.int64 if n["dtype"] == "int" else torch.bool,
                            device=dev)
    if op == "load":
        buf = buffers[n["buffer"]]
        if buf.is_floating_point() or buf.is_complex():
            raise _GiveUp
        buf = buf.detach()
        if len(a) != buf.dim():
            raise _GiveUp
        if a:  # the kernels clamp indices into the tensor's shape
            idx = [x.clamp(0, buf.shape[d] - 1) for d, x in enumerate(a)]
            out = buf[tuple(torch.broadcast_tensors(*idx))]
        else:
            out = buf.reshape(())
        return out if out.dtype == torch.bool else out.long()
    if any(x.is_floating_point() for x in a):
        raise _GiveUp
    if op in _ARITH:
        if op in ("floordiv", "mod") and bool((a[1] == 0).any()):
            raise _GiveUp
        return _ARITH[op](_as_int(a[0]), _as_int(a[1]))
    if op in _CMP:
        return _CMP[op](_as_int(a[0]), _as_int(a[1]))
    if op in _LOGIC:
        if a[0].dtype != a[1].dtype:
            a = [_as_int(x) for x in a]
        return _LOGIC[op](a[0], a[1])
    if op in ("min", "max"):
        if a[0].dtype != a[1].dtype:
            a = [_as_int(x) for x in a]
        return (torch.minimum if op == "min" else torch.maximum)(a[0], a[1])
    if op == "not":
        return ~a[0]
    if op == "neg":
        return -_as_int(a[0])
    if op == "abs":
        return a[0] if a[0].dtype == torch.bool else a[0].abs()
    if op == "where":
        x, y = a[1], a[2]
        if x.dtype != y.dtype:
            x, y = _as_int(x), _as_int(y)
        return torch.where(a[0].bool(), x, y)
    if op == "cast":
        if n["dtype"] == "int":
            return _as_int(a[0])
        if n["dtype"] == "bool":
            return a[0] != 0
    raise _GiveUp


_PROGRAMS: dict = {}
_KEPT: dict = {}
_LOCK = threading.Lock()


def block_kept(trace_json: str, buffers: list, batch: int, heads: int, q_start: int, q_len: int,
               kv_start: int, kv_len: int, device) -> bool:
    """Whether the mask of ``trace_json`` (the variant's own trace, positions unshifted) keeps
    any score with q_idx in [q_start, q_start + q_len) and kv_idx in [kv_start, kv_start +
    kv_len). True where it cannot tell."""
    with _LOCK:
        prog = _PROGRAMS.get(trace_json)
        if prog is None:
            prog = _PROGRAMS[trace_json] = _MaskProgram(trace_json)
    if prog.output is None or q_len == 0 or kv_len == 0:
        return prog.output is None
    key = (trace_json, batch, heads, q_start, q_len, kv_start, kv_len)
    if not prog.reads_buffers:
        with _LOCK:
            hit = _KEPT.get(key)
        if hit is not None:
            return hit
    kept = _evaluate(prog, buffers, batch, heads, q_start, q_len, kv_start, kv_len, device)
    if not prog.reads_buffers:
        with _LOCK:
            if len(_KEPT) >= _CACHE_LIMIT:
                _KEPT.clear()
            _KEPT[key] = kept
    return kept


def _evaluate(prog, buffers, batch, heads, q_start, q_len, kv_start, kv_len, device) -> bool:
    def idx(start, n, dim):
        shape = [1, 1, 1, 1]
        shape[dim] = n
        return torch.arange(start, start + n, device=device).view(shape)

    params = {"b": idx(0, batch, 0), "h": idx(0, heads, 1), "kv_idx": idx(kv_start, kv_len, 3)}
    rows = max(1, _MAX_ELEMENTS // max(1, batch * heads * kv_len))
    try:
        with torch.no_grad():
            for r in range(q_start, q_start + q_len, rows):
                params["q_idx"] = idx(r, min(rows, q_start + q_len - r), 2)
                if bool(prog.evaluate(params, buffers).any()):
                    return True
    except _GiveUp:
        return True
    except (RuntimeError, IndexError):  # e.g. an index past a tensor's end: let the op say it
        return True
    return False
