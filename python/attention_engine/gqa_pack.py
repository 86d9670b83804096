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

from .graph_prefix import dump, insert_after_params, parse


def gqa_packed(trace_json: str, group: int, sq: int) -> str:
    """The trace with h and q_idx rewritten for packing `group` query heads of `sq` queries
    each into one head's rows."""
    if group < 1 or sq < 1:
        raise ValueError(f"attention_engine: GQA packing needs group >= 1 and sq >= 1, got "
                         f"{group} and {sq}")
    g, params, n_params = parse(trace_json, ("h", "q_idx"))
    h, q = params["h"], params["q_idx"]
    c_group, c_sq, h_base, g_off, new_h, new_q = range(n_params, n_params + 6)
    insert_after_params(g, n_params, [
        {"op": "const", "dtype": "int", "value": group},
        {"op": "const", "dtype": "int", "value": sq},
        {"op": "mul", "args": [h, c_group]},
        {"op": "floordiv", "args": [q, c_sq]},
        {"op": "add", "args": [h_base, g_off]},
        {"op": "mod", "args": [q, c_sq]},
    ], {h: new_h, q: new_q})
    return dump(g)
