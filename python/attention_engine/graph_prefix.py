"""Rewrites of a traced graph (its JSON) that insert nodes right after the parameters and make
every later use of some parameters read one of those nodes instead. The sequence positions and
the context-parallel offsets (positions.py) and GQA packing (gqa_pack.py) are such rewrites."""
from __future__ import annotations

import json


def parse(trace_json: str, needed) -> tuple[dict, dict, int]:
    """The trace as a dict, its parameters' node ids by name, and the number of leading
    parameter nodes (the tracer emits them first). Raises if one of `needed` is missing."""
    g = json.loads(trace_json)
    params = {n["name"]: i for i, n in enumerate(g["nodes"]) if n.get("op") == "param"}
    missing = [p for p in needed if p not in params]
    if missing:
        raise ValueError(f"attention_engine: trace without parameter(s) {missing}")
    return g, params, max(params.values()) + 1


def insert_after_params(g: dict, n_params: int, prefix: list, replaced: dict) -> None:
    """Puts `prefix` (nodes whose ids start at n_params) after the parameters, shifts the later
    nodes and the outputs, and makes their uses of parameter p read node replaced[p]
    (arguments keep smaller ids than their users: the prefix may read the parameters)."""
    shift = len(prefix)

    def old_to_new(i: int) -> int:
        if i in replaced:
            return replaced[i]
        return i if i < n_params else i + shift

    def remap(node: dict) -> dict:
        out = dict(node)
        if "args" in out:
            out["args"] = [old_to_new(a) for a in out["args"]]
        return out

    nodes = g["nodes"]
    g["nodes"] = nodes[:n_params] + prefix + [remap(n) for n in nodes[n_params:]]
    g["outputs"] = {k: old_to_new(v) for k, v in g["outputs"].items()}


def dump(g: dict) -> str:
    return json.dumps(g, sort_keys=True)
