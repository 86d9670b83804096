"""A compiled variant's graph, rewritten for grouped-query packing (the inference entry points).

With grouped-query attention (Hq = G * Hkv) and few queries per sequence (decode: Sq = 1), a
query tile of one head holds Sq useful rows out of 64 or 128, and each of the G heads of a
group reads the same keys again. Packing runs the call as Hkv heads of G * Sq rows instead:
q [B, Hq, Sq, D] is viewed as [B, Hkv, G * Sq, D] (row g * Sq + s is head h_kv * G + g, query
s), so one tile holds the whole group and the keys are read once. For the mods to see the
original head and query index, the graph is rewritten:

    h      -> h * G + q_idx // Sq
    q_idx  -> q_idx % Sq

Applied after positions.py's rewrite, whose q_idx is then the unpacked one.
"""
from __future__ import annotations

import json


def _remap(node: dict, old_to_new) -> dict:
    out = dict(node)
    if "args" in out:
        out["args"] = [old_to_new(a) for a in out["args"]]
    return out


def gqa_packed(trace_json: str, group: int, sq: int) -> str:
    """The trace with h and q_idx rewritten for packing `group` query heads of `sq` queries
    each into one head's rows."""
    if group < 1 or sq < 1:
        raise ValueError(f"attention_engine: GQA packing needs group >= 1 and sq >= 1, got "
                         f"{group} and {sq}")
    g = json.loads(trace_json)
    nodes = g["nodes"]
    params = {n["name"]: i for i, n in enumerate(nodes) if n.get("op") == "param"}
    if "h" not in params or "q_idx" not in params:
        raise ValueError("attention_engine: trace without its h / q_idx parameters")
    n_params = max(params.values()) + 1
    h, q = params["h"], params["q_idx"]
    c_group, c_sq, h_base, g_off, new_h, new_q = range(n_params, n_params + 6)
    prefix = [
        {"op": "const", "dtype": "int", "value": group},
        {"op": "const", "dtype": "int", "value": sq},
        {"op": "mul", "args": [h, c_group]},
        {"op": "floordiv", "args": [q, c_sq]},
        {"op": "add", "args": [h_base, g_off]},
        {"op": "mod", "args": [q, c_sq]},
    ]
    shift = len(prefix)

    def old_to_new(i: int) -> int:
        if i == h:
            return new_h
        if i == q:
            return new_q
        return i if i < n_params else i + shift

    g["nodes"] = nodes[:n_params] + prefix + [_remap(n, old_to_new) for n in nodes[n_params:]]
    g["outputs"] = {k: old_to_new(v) for k, v in g["outputs"].items()}
    return json.dumps(g, sort_keys=True)
