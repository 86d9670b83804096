"""The user's source text cannot change generated code (issue 15, defect 2): each statement of
the generated Variant carries the user's line as a `//` comment, and no text there (a trailing
backslash, a trigraph, a carriage return, `*/`) may reach past the comment's end."""
import json
import re

import pytest

from attention_engine import _C

LOCS = [
    "m.py:1: return s * 2.0 + \\",            # a Python line continuation
    "m.py:1: return s * 2.0 + \\   ",         # ... with spaces after it
    "m.py:1: x = '??/'",                      # a trigraph for backslash
    "m.py:1: x = 1 */ int evil; /*",
    "m.py:1: a\rreturn 0;",
    "m.py:1: a\nreturn 0;",
    "m.py:1: a\x0breturn 0;\x0c",
    "m.py:1: s \u2028 return 0; \u00e9",      # a Unicode line separator, a non-ASCII letter
]


def variant_with_loc(loc: str, i: int):
    # A constant unique to the case: variants are shared by graph, and the first one
    # registered keeps its source lines.
    nodes = [{"op": "param", "name": "score"},
             {"op": "const", "dtype": "float", "value": 1.0 + (i + 1) / 1024},
             {"op": "mul", "args": [0, 1], "loc": loc},
             {"op": "tanh", "args": [2], "loc": loc},
             {"op": "add", "args": [3, 0], "loc": loc}]
    trace = {"version": 1, "normalize": "softmax", "buffers": [], "nodes": nodes,
             "outputs": {"score": 4}}
    return _C.build_variant(json.dumps(trace))


def variant_struct(source: str) -> str:
    start = source.index("struct Variant {")
    return source[start:source.index("\n};", start)]


@pytest.mark.parametrize("i", range(len(LOCS)))
def test_source_lines_cannot_splice_or_end_a_comment(i):
    v = variant_with_loc(LOCS[i], i)
    for kind in ("fwd", "bwd"):
        code = variant_struct(v.kernel_source(kind, 64, 64)["source"])
        for line in code.split("\n"):
            assert not re.search(r"\\\s*$", line), f"line continuation: {line!r}"
            assert "??/" not in line and "\r" not in line and "\x0b" not in line, repr(line)
            assert all(32 <= ord(c) < 127 for c in line), f"non-ASCII: {line!r}"
            body, _, comment = line.partition("//")
            assert "return 0;" not in body and "evil" not in body, repr(line)
        # one statement per node, each ending its own line
        statements = [ln for ln in code.split("\n") if ln.strip().startswith("const float n")]
        assert statements and all(";" in s.partition("//")[0] for s in statements)
        assert "m.py:1:" in code  # the line is still shown


def test_trailing_backslash_compiles_without_warnings():
    try:
        _C.jit_compiler_version("sm_80")
    except Exception:  # noqa: BLE001
        pytest.skip("NVRTC not available")
    v = variant_with_loc(LOCS[0], 100)
    info = v.kernel_source("fwd", 64, 64, family="sm80")
    (report,) = _C.jit_check_arches(info["source"], info["entry"], arches=["sm_80"],
                                    options=info["options"])
    assert report["ok"], report["error"]
    assert "warning" not in report["log"].lower(), report["log"]


def test_mask_loads_by_row_and_column(monkeypatch):
    """A document mask's two loads become a row term and a column term (codegen/mask_split.h)
    that the forwards load once per row and column; AE_MASK_LOADS picks per score, by row or
    both in a kernel of its own (its key and its source)."""
    import torch
    import attention_engine as ae
    from attention_engine import mods
    attn = ae.compile(mask_mod=mods.document_mask(torch.zeros(64, dtype=torch.int32)))
    info = attn.variant.kernel_source("fwd", 128, 128, True, ["int32"], family="sm90")
    src = info["source"]
    assert "kMaskSplit = true" in src
    rc = src[src.index("bool mask_rc("):]
    rc = rc[:rc.index("\n  }\n")]
    assert "ae::ld" not in rc and " = r.n" in rc and " = c.n" in rc, rc
    assert "AE_MASK_LOADS" not in src.split("#include")[0]
    monkeypatch.setenv("AE_MASK_LOADS", "0")
    per_score = attn.variant.kernel_source("fwd", 128, 128, True, ["int32"], family="sm90")
    assert "#define AE_MASK_LOADS 0" in per_score["source"]
    assert per_score["describe"].endswith(" ml0"), per_score["describe"]
    # causal loads nothing: no terms
    causal = ae.compile(mask_mod=mods.causal).variant.kernel_source("fwd", 128, 128, True, [],
                                                                  family="sm90")
    assert "kMaskSplit = false" in causal["source"]
