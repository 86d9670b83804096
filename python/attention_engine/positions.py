"""A compiled variant's graph, rewritten to see sequence positions (the inference entry points;
with_offsets: context parallelism).

The varlen and KV-cache entry points (inference.py) run sequences of different lengths in one
padded batch. For the mods to give the same answer as in training, ``q_idx`` must be the
query's position in its sequence and the keys past a sequence's end must not count. Both are
per-row data, so they become two captured tensors of the rewritten graph, indexed by ``b``:

    q_idx  -> q_idx + q_start[b]      (the position of the batch row's first query; rows
                                       past the sequence's end, padding, read position 0 so
                                       that a captured tensor indexed by q_idx stays in range)
    mask   -> mask and kv_idx < kv_len[b]

Everything else (the kernels, the reference executor, the backward) runs the rewritten graph as
any other variant with captured tensors.
"""
from __future__ import annotations

from typing import Optional

from .graph_prefix import dump, insert_after_params, parse

_PARAMS = ("score", "b", "h", "q_idx", "kv_idx")


def with_positions(trace_json: str, sq: Optional[int] = None) -> str:
    """The trace with two more captured tensors (int64 ``q_start`` and ``kv_len``, one entry
    per batch row) and q_idx and the mask rewritten as the module docstring says. With ``sq``
    (every batch row's queries are its last sq tokens: a KV cache's call) only ``kv_len`` is
    added and q_start[b] is kv_len[b] - sq in the graph (no tensor to compute per call)."""
    g, params, n_params = parse(trace_json, _PARAMS)
    b, q = params["b"], params["q_idx"]
    if sq is None:
        q_start_buf, kv_len_buf = len(g["buffers"]), len(g["buffers"]) + 1
        g["buffers"] = g["buffers"] + [
            {"dtype": "int64", "name": "q_start", "requires_grad": False, "shape": [1]},
            {"dtype": "int64", "name": "kv_len", "requires_grad": False, "shape": [1]},
        ]
        start, length = range(n_params, n_params + 2)
        head = [{"op": "load", "buffer": q_start_buf, "args": [b]},
                {"op": "load", "buffer": kv_len_buf, "args": [b]}]
    else:
        kv_len_buf = len(g["buffers"])
        g["buffers"] = g["buffers"] + [
            {"dtype": "int64", "name": "kv_len", "requires_grad": False, "shape": [1]}]
        length, c_sq, start = range(n_params, n_params + 3)
        head = [{"op": "load", "buffer": kv_len_buf, "args": [b]},
                {"op": "const", "dtype": "int", "value": int(sq)},
                {"op": "sub", "args": [length, c_sq]}]
    # pos = q_idx + q_start[b], and q_idx' = pos where pos < kv_len[b] (a real query), else 0
    # (a padding row, whose output is dropped); every later use of q_idx reads q_idx'.
    pos, zero, real, new_q = range(n_params + len(head), n_params + len(head) + 4)
    insert_after_params(g, n_params, head + [
        {"op": "add", "args": [q, start]},
        {"op": "const", "dtype": "int", "value": 0},
        {"op": "lt", "args": [pos, length]},
        {"op": "where", "args": [real, pos, zero]},
    ], {q: new_q})

    # The keys a batch row has: kv_idx < kv_len[b], and-ed into the mask.
    g["nodes"].append({"op": "lt", "args": [params["kv_idx"], length]})
    _and_into_mask(g, len(g["nodes"]) - 1)
    return dump(g)


def _and_into_mask(g: dict, keep: int) -> None:
    """The graph's mask output and-ed with node `keep` (or `keep` alone where it has none)."""
    nodes, outputs = g["nodes"], g["outputs"]
    if "mask" in outputs:
        nodes.append({"op": "and", "args": [outputs["mask"], keep]})
        outputs["mask"] = len(nodes) - 1
    else:
        outputs["mask"] = keep


def with_offsets(trace_json: str) -> str:
    """The trace with two more captured tensors, 0-d int64 ``q_offset`` and ``kv_offset``,
    added to the positions the mods see (context parallelism: a rank's chunk of queries
    against another rank's chunk of keys, both at their places in the whole sequence):

        q_idx  -> q_idx + q_offset
        kv_idx -> kv_idx + kv_offset
    """
    g, params, n_params = parse(trace_json, _PARAMS)
    q_buf, kv_buf = len(g["buffers"]), len(g["buffers"]) + 1
    g["buffers"] = g["buffers"] + [
        {"dtype": "int64", "name": "q_offset", "requires_grad": False, "shape": []},
        {"dtype": "int64", "name": "kv_offset", "requires_grad": False, "shape": []},
    ]
    q, kv = params["q_idx"], params["kv_idx"]
    q_off, kv_off, new_q, new_kv = range(n_params, n_params + 4)
    insert_after_params(g, n_params, [
        {"op": "load", "buffer": q_buf, "args": []},  # 0-d: no indices
        {"op": "load", "buffer": kv_buf, "args": []},
        {"op": "add", "args": [q, q_off]},
        {"op": "add", "args": [kv, kv_off]},
    ], {q: new_q, kv: new_kv})
    return dump(g)


def with_packed_sequences(trace_json: str) -> str:
    """The trace for varlen's packed route: the sequences stay back to back as one batch row
    (q [1, Hq, total_q, D] against k [1, Hkv, total_k, D]) and the mask keeps each query to its
    own sequence's keys. Four more captured int64 tensors: per query row ``seq_q`` (its
    sequence), ``q_pos`` (its position in the sequence) and ``k_base`` (the first key row of its
    sequence), per key row ``seq_k``:

        same    = seq_q[q_idx] == seq_k[kv_idx]
        b       -> seq_q[q_idx]
        q_idx   -> q_pos[q_idx]
        kv_idx  -> kv_idx - k_base[q_idx] where same, else 0 (a masked key; in range for a
                   captured tensor indexed by kv_idx)
        mask    -> mask and same

    Only ``seq_k`` is read per key column; the rest per query row (as a document mask is).
    """
    g, params, n_params = parse(trace_json, _PARAMS)
    nb = len(g["buffers"])
    g["buffers"] = g["buffers"] + [
        {"dtype": "int64", "name": name, "requires_grad": False, "shape": [1]}
        for name in ("seq_q", "q_pos", "k_base", "seq_k")]
    b, q, kv = params["b"], params["q_idx"], params["kv_idx"]
    s_q, s_k, same, pos, base, local, zero, new_kv = range(n_params, n_params + 8)
    insert_after_params(g, n_params, [
        {"op": "load", "buffer": nb, "args": [q]},
        {"op": "load", "buffer": nb + 3, "args": [kv]},
        {"op": "eq", "args": [s_q, s_k]},
        {"op": "load", "buffer": nb + 1, "args": [q]},
        {"op": "load", "buffer": nb + 2, "args": [q]},
        {"op": "sub", "args": [kv, base]},
        {"op": "const", "dtype": "int", "value": 0},
        {"op": "where", "args": [same, local, zero]},
    ], {b: s_q, q: pos, kv: new_kv})
    _and_into_mask(g, same)
    return dump(g)
