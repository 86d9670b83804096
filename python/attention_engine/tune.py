"""Ahead-of-time tuning: ``python -m attention_engine.tune`` times the candidate configurations
of a few variants at a list of shapes on this GPU and stores the fastest beside the kernel
cache, where calls with ``autotune=True`` or ``"cached"`` (or ``AE_AUTOTUNE``) find them.

    python -m attention_engine.tune --variant causal --variant plain \\
        --shape 2x16x4096x128 --shape 1x32x8x16384x128          # B x Hq [x Hkv] x S [x Skv] x D
    python -m attention_engine.tune --list --device h100 --shape 1x16x4096x128   # no GPU needed

--list prints the candidates the tuner would time (and with --compile, compiles each with NVRTC
and says which can win); it runs without a GPU. Stored choices: ``python -m
attention_engine.cache info``.
"""
import argparse
import importlib
import os
import sys
import time

import torch

from . import _C, mods
from .api import CompiledAttention, compile as ae_compile

# Variants by name for the command line ("name" or "name:argument"); their captured tensors
# on the device the sweep runs on.
NAMED = {
    "plain": lambda arg, h, dev: ae_compile(),
    "causal": lambda arg, h, dev: ae_compile(mask_mod=mods.causal),
    "sliding_window": lambda arg, h, dev: ae_compile(mask_mod=mods.sliding_window(int(arg or 256))),
    "alibi": lambda arg, h, dev: ae_compile(mods.alibi(mods.alibi_slopes(h, device=dev)), mods.causal),
    "softcap": lambda arg, h, dev: ae_compile(mods.softcap(float(arg or 30.0))),
}


def parse_shape(text: str) -> dict:
    """'BxHxSxD', 'BxHqxHkvxSxD' or 'BxHqxHkvxSqxSkvxD' (Dv = D) -> a problem dict."""
    try:
        n = [int(x) for x in text.lower().split("x")]
    except ValueError:
        n = []
    if len(n) == 4:
        b, h, s, d = n
        n = [b, h, h, s, s, d]
    elif len(n) == 5:
        n = n[:4] + [n[3], n[4]]
    if len(n) != 6 or min(n) < 1 or n[1] % n[2]:
        raise ValueError(f"not a shape: {text!r} (BxHxSxD, BxHqxHkvxSxD or BxHqxHkvxSqxSkvxD, "
                         "positive, Hq a multiple of Hkv)")
    b, hq, hkv, sq, skv, d = n
    return dict(batch=b, q_heads=hq, kv_heads=hkv, q_len=sq, kv_len=skv, d_qk=d, d_v=d)


def _shape_arg(text: str) -> dict:
    try:
        return parse_shape(text)
    except ValueError as e:  # argparse prints this message as it is
        raise argparse.ArgumentTypeError(str(e)) from None


def variant(spec: str, heads: int, device: str = "cpu") -> CompiledAttention:
    """A named variant ('causal', 'softcap:30'), or 'package.module:attr' naming a
    CompiledAttention (or a function of the head count returning one)."""
    name, _, arg = spec.partition(":")
    if name in NAMED:
        return NAMED[name](arg, heads, device)
    if arg:
        obj = getattr(importlib.import_module(name), arg)
        obj = obj if isinstance(obj, CompiledAttention) else obj(heads)
        if isinstance(obj, CompiledAttention):
            return obj
    raise ValueError(f"unknown variant {spec!r}: one of {', '.join(NAMED)} or module:attribute")


def sweep(attn: CompiledAttention, shapes, dtype=torch.bfloat16, backward=True, device="cuda"):
    """Tunes attn at each shape (problem dicts, as parse_shape gives) on the GPU: one call, and
    one backward, per shape with autotuning on, which stores each shape class's choice."""
    _C.tune_set_mode(attn.key, "on")
    for p in shapes:
        q = torch.randn(p["batch"], p["q_heads"], p["q_len"], p["d_qk"], device=device, dtype=dtype)
        k = torch.randn(p["batch"], p["kv_heads"], p["kv_len"], p["d_qk"], device=device, dtype=dtype)
        v = torch.randn(p["batch"], p["kv_heads"], p["kv_len"], p["d_v"], device=device, dtype=dtype)
        for t in (q, k, v):
            t.requires_grad_(backward)
        out = attn(q, k, v)
        if backward:
            out.backward(torch.randn_like(out))
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _list(args, shapes) -> int:
    for spec in args.variant:
        for p in shapes:
            attn = variant(spec, p["q_heads"])
            for kind in ("fwd",) if args.forward_only else ("fwd", "bwd"):
                problem = dict(p, kind=kind, bf16=args.dtype == "bf16",
                               buffer_dtypes=[str(t.dtype).replace("torch.", "") for t in attn.buffers])
                cands = _C.tune_candidates(attn.key, problem, args.device, args.compile)
                print(f"{spec} {kind} {p}: {len(cands)} candidates on {args.device}")
                for c in cands:
                    fate = ""
                    if args.compile:
                        fate = "ok" if c["eligible"] else f"out: {c['why']}"
                        fate = f"  [{c['registers']} regs, {fate}]"
                    print(f"  {c['choice'] or '(table)':32s} {c['describe']}"
                          f"{' x' + str(c['kv_splits']) if c['kv_splits'] > 1 else ''}{fate}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attention_engine.tune",
                                     description="Tune kernel configurations ahead of time.")
    parser.add_argument("--variant", action="append", default=None,
                        help=f"{', '.join(NAMED)} (name:arg), or module:attribute; repeatable "
                             "(default: plain and causal)")
    parser.add_argument("--shape", action="append", required=True, type=_shape_arg,
                        help="BxHxSxD, BxHqxHkvxSxD or BxHqxHkvxSqxSkvxD; repeatable")
    parser.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    parser.add_argument("--forward-only", action="store_true", help="no backward tuning")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds per tuning of one kind, compiles included (default: "
                             "AE_TUNE_BUDGET, else 60: ahead of time, the whole search)")
    parser.add_argument("--list", action="store_true",
                        help="print the candidates instead of timing them (no GPU needed)")
    parser.add_argument("--device", default="h100",
                        help="--list: the device class (h100, h200, a100, ada)")
    parser.add_argument("--compile", action="store_true",
                        help="--list: compile each candidate and say which can win")
    args = parser.parse_args(argv)
    args.variant = args.variant or ["plain", "causal"]
    if args.budget is not None and not args.budget > 0:
        parser.error(f"--budget must be a number of seconds > 0, not {args.budget}")
    try:
        if args.list:
            return _list(args, args.shape)
        if not torch.cuda.is_available():
            print("attention_engine.tune: timing needs a CUDA GPU (--list works without one)",
                  file=sys.stderr)
            return 2
        if args.budget is not None or not os.environ.get("AE_TUNE_BUDGET"):
            os.environ["AE_TUNE_BUDGET"] = str(args.budget or 60.0)
        t0 = time.time()
        dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
        for spec in args.variant:
            for p in args.shape:
                sweep(variant(spec, p["q_heads"], "cuda"), [p], dtype, not args.forward_only)
    except ValueError as e:
        print(f"attention_engine.tune: {e}", file=sys.stderr)
        return 2
    new = [c for c in _C.tune_list() if c["created"] >= int(t0)]
    print(f"{len(new)} choices stored in {_C.tune_store_dir() or '(memory: no disk cache)'}")
    for c in new:
        print(f"  {c['choice'] or '(table)':32s} {c['ms']:.4f} ms (table {c['table_ms']:.4f})  "
              f"{c['key']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
