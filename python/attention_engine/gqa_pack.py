"""A compiled variant's graph, rewritten for grouped-query packing (the inference entry points).

With grouped-query attention (Hq = G * Hkv) and few queries per sequence (decode: Sq = 1), a
query tile of one head holds Sq useful rows out of 64 or 128, and each of the G heads of a
group reads the same keys again. Packing runs the call as Hkv heads of G * Sq rows instead:
q [B, Hq, Sq, D] is viewed as [B, Hkv, G * Sq, D] (row g * Sq + s is head h_kv * G + g, query
s), so one tile holds the whole group and the keys are read once. For the mods to see the
original head and query index, the graph is rewritten:

    h      -> h * G + q_idx // Sq    (h // G -> h: the KV head)
    q_idx  -> q_idx % Sq

Applied after positions.py's rewrite, whose q_idx is then the unpacked one (the inference entry
points), or alone (a direct call with few queries: `packed_call`).
"""
from __future__ import annotations

import threading
from typing import Callable, Optional

import torch

from .graph_prefix import dump, insert_after_params, parse

# Packing where a group's queries fit a query tile of the kernels (128 rows) and there are few
# per head (decode, speculative decoding).
PACK_MAX_SQ, PACK_MAX_ROWS = 16, 128
# Head dims past 256 (MLA's latent 576): the MLA decode kernel takes 64 rows per CTA and any
# number of query blocks, and every head of the group reads the same latent cache, so all its
# heads (DeepSeek's 128) times the speculative queries pack.
PACK_MAX_ROWS_WIDE = PACK_MAX_SQ * 128

_PACKED: dict = {}  # (trace JSON, group, sq) -> key of the packed variant
_LOCK = threading.Lock()


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
    # (h * G + q_idx // Sq) // G is the KV head h for every row a packed tile stores (q_idx <
    # G * Sq): a mask reading a tensor per KV head (h // G) reads it by h itself, a lookup the
    # engine recognizes (csrc/ir/block_mask.h: the sparse decode's blocks).
    nodes = g["nodes"]
    kv_head = {i for i, nd in enumerate(nodes)
               if nd.get("op") == "floordiv" and nd["args"][0] == new_h
               and nodes[nd["args"][1]].get("op") == "const"
               and nodes[nd["args"][1]].get("dtype") == "int"
               and nodes[nd["args"][1]].get("value") == group}
    for nd in nodes:
        if "args" in nd:
            nd["args"] = [h if a in kv_head else a for a in nd["args"]]
    g["outputs"] = {k: h if v in kv_head else v for k, v in g["outputs"].items()}
    return dump(g)


def pack_shape(hq: int, hkv: int, sq: int, head_dim: int = 0) -> Optional[tuple]:
    """(group, sq) when [., hq, sq, head_dim] queries against hkv key heads pack, else None."""
    if hkv < 1 or hq % hkv:
        return None
    group = hq // hkv
    rows = PACK_MAX_ROWS_WIDE if head_dim > 256 else PACK_MAX_ROWS
    return (group, sq) if 1 < group and 1 <= sq <= PACK_MAX_SQ and group * sq <= rows else None


def packed_call(trace_json: str, q, k, v, return_lse: bool,
                run: Callable[[torch.Tensor, str], object], autotune: str = "off"):
    """A direct call [B, Hq, Sq, D] x [B, Hkv, Skv, D], GQA-packed where it packs: run(q', key)
    with q' [B, Hkv, G * Sq, D] and the packed variant's key, its out (and lse) unpacked; None
    where it does not pack (shapes that do not, or that the op will refuse with its own
    message, and torch.compile's tracing, which this Python does not go through)."""
    if torch.compiler.is_compiling():
        return None
    if not all(isinstance(x, torch.Tensor) and x.dim() == 4 for x in (q, k, v)):
        return None
    B, Hq, Sq, D = q.shape
    if k.shape[0] != B or k.shape[3] != D or v.shape[:3] != k.shape[:3]:
        return None
    pack = pack_shape(Hq, k.shape[1], Sq, D)
    if pack is None:
        return None
    group = pack[0]
    with _LOCK:
        key = _PACKED.get((trace_json, *pack))
        if key is None:
            from .api import VariantRef, _variant_of  # api imports this module
            rewritten = gqa_packed(trace_json, *pack)
            key = _PACKED[(trace_json, *pack)] = VariantRef(rewritten, _variant_of(rewritten)).key
    inherit_autotune(autotune, key)
    res = run(q.reshape(B, Hq // group, group * Sq, D), key)
    out, lse = res if return_lse else (res, None)
    out = out.reshape(B, Hq, Sq, out.shape[-1])
    return (out, lse.reshape(B, Hq, Sq)) if return_lse else out


def inherit_autotune(autotune: str, key: str) -> None:
    """A rewritten variant (packed, positions) tunes as the compiled one it runs for
    (`ae.compile(..., autotune=...)` is kept per variant key: csrc/torch/autotune.h)."""
    if autotune != "off":
        from . import _C
        _C.tune_set_mode(key, autotune)
