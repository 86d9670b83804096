"""Regenerates the default tile tables from a tuning sweep (run it on the H200).

    PYTHONPATH=python python tools/tables_from_tuning.py --sweep [--quick] > tuning.md
    PYTHONPATH=python python tools/tables_from_tuning.py            # the stored choices only

--sweep tunes the benchmark's cases (bench/attention_bench.py's conventions: bf16, B * S = 16k
tokens, H = 2048 / D; forward and backward) with autotuning on, storing each shape class's
choice beside the kernel cache. Then, from the stored choices of the variants below, it prints
(1) a markdown table of tuned vs table per case (for bench/RESULTS.md) and (2) per family and
head dim, the configurations that won, most votes first, as rows in csrc/plan/tile_tables.cc's
syntax: paste them into the rule of that head dim (keeping the smaller fallbacks behind them
for devices with less shared memory), then rebuild and run the compile-all test.
"""
import argparse
import collections
import os
import re
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import attention_engine as ae  # noqa: E402
from attention_engine import _C, mods, tune  # noqa: E402


def variants(heads: int, seq: int) -> dict:
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    doc = (torch.arange(seq, device=dev) // max(1, seq // 8)).to(torch.int64)  # 8 documents
    return {
        "plain": ae.compile(),
        "causal": ae.compile(mask_mod=mods.causal),
        "alibi": ae.compile(mods.alibi(mods.alibi_slopes(heads, device=dev)), mods.causal),
        "softcap": ae.compile(mods.softcap(30.0)),
        "sliding_window": ae.compile(mask_mod=mods.sliding_window(1024)),
        "relative_bias": ae.compile(mods.relative_bias(torch.zeros(heads, 257, device=dev), 128)),
        "document": ae.compile(mask_mod=mods.document_mask(doc)),
    }


def cases(quick: bool):
    for d in ([128] if quick else [64, 128, 256]):
        for s in ([4096] if quick else [4096, 16384]):
            yield d, s, dict(batch=16384 // s, q_heads=2048 // d, kv_heads=2048 // d, q_len=s,
                             kv_len=s, d_qk=d, d_v=d)


def row_of(describe: str):
    """(family, C++ row) from a KernelSpec::describe(): 'fwd90 sm_90a bf16 d128/128 128x176 w12
    s2 ov pp' -> ('sm90 forward', '{176, 2, true, true}')."""
    kind, _arch, _dtype, _dims, tile, *flags = describe.split()
    bn = int(tile.split("x")[1])
    get = lambda p, d: next((int(f[len(p):]) for f in flags if re.fullmatch(p + r"-?\d+", f)), d)  # noqa: E731
    if kind == "fwd90":
        ov, pp = "ov" in flags, "pp" in flags
        ahead = ", false, true" if "sa" in flags else ""  # Sm90Fwd's wide, ahead
        return "sm90 forward", f"{{{bn}, {get('s', 2)}, {str(ov).lower()}, {str(pp).lower()}{ahead}}}"
    if kind == "fwd":
        return "sm80 forward", f"{{{get('w', 4)}, {get('mt', 1)}, {bn}, {get('r', -1)}}}"
    if kind == "bwd":
        return "sm80 backward", f"{{{bn}, {get('s', 2)}, {get('r', -1)}}}"
    return f"{kind} (one shape)", describe


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sweep", action="store_true", help="tune the cases first (needs a GPU)")
    p.add_argument("--quick", action="store_true", help="D128 at 4k only")
    args = p.parse_args(argv)
    os.environ.setdefault("AE_TUNE_BUDGET", "60")  # ahead of time: the whole search
    names = {}  # variant key -> name
    for d, s, shape in cases(args.quick):
        for name, attn in variants(shape["q_heads"], s).items():
            names[attn.key] = name
            if args.sweep:
                if not torch.cuda.is_available():
                    print("--sweep needs a CUDA GPU", file=sys.stderr)
                    return 2
                print(f"tuning {name} d{d} s{s}", file=sys.stderr)
                tune.sweep(attn, [shape])
    stored = [c for c in _C.tune_list() if c["key"].split()[2] in names]
    print("| variant | kind | shape class | table ms | tuned ms | speedup | choice |")
    print("|---|---|---|---|---|---|---|")
    votes = collections.defaultdict(collections.Counter)  # (family, dims) -> row -> votes
    for c in stored:
        words = c["key"].split()
        kind, name, cls = words[1], names[words[2]], " ".join(words[3:8])
        speedup = c["table_ms"] / c["ms"] if c["ms"] > 0 else 0.0
        print(f"| {name} | {kind} | {cls} | {c['table_ms']:.4f} | {c['ms']:.4f} | {speedup:.3f} "
              f"| {c['choice'] or '(table)'} |")
        if c["describe"]:
            family, row = row_of(c["describe"])
            votes[(family, words[4])][row] += 1
    print("\nRows for csrc/plan/tile_tables.cc (most votes first; keep the rule's smaller "
          "fallbacks after them):")
    for (family, dims), rows in sorted(votes.items()):
        print(f"  {family} {dims}: {{{', '.join(r for r, _ in rows.most_common())}}}"
              f"   // votes: {', '.join(str(n) for _, n in rows.most_common())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
