"""The demo (scripts/demo.sh): compiles a handful of variants, prints each op graph, runs
them forward and backward on small CPU tensors and checks them against plain PyTorch math.

    python -m attention_engine.demo [--quiet]
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import torch

import attention_engine as ae
from attention_engine import mods

B, HQ, HKV, SQ, SKV, D = 2, 4, 2, 37, 53, 16


def plain_attention(q, k, v, bias=None, keep=None, normalize="softmax", fn=None):
    """Attention written out in plain PyTorch (float64), the demo's independent check."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if fn is not None:
        s = fn(s)
    if bias is not None:
        s = s + bias
    if normalize == "softmax":
        if keep is not None:
            s = s.masked_fill(~keep, float("-inf"))
        p = torch.softmax(s, -1).nan_to_num(0.0)
    else:
        p = s if keep is None else s.masked_fill(~keep, 0.0)
    return p @ v


def variants():
    qi = torch.arange(SQ).view(-1, 1)
    ki = torch.arange(SKV).view(1, -1)
    slopes = mods.alibi_slopes(HQ).double()
    window = 8
    return [
        ("plain softmax", ae.compile(), {}),
        ("causal", ae.compile(mask_mod=mods.causal), {"keep": qi >= ki}),
        ("ALiBi + causal", ae.compile(mods.alibi(slopes), mods.causal),
         {"bias": slopes.view(1, -1, 1, 1) * (ki - qi), "keep": qi >= ki}),
        ("softcap 5", ae.compile(mods.softcap(5.0)),
         {"fn": lambda s: 5.0 * torch.tanh(s / 5.0)}),
        ("sliding window 8", ae.compile(mask_mod=mods.sliding_window(window)),
         {"keep": (qi >= ki) & (qi - ki <= window)}),
        ("sigmoid, normalize=none", ae.compile(mods.sigmoid(-2.0), normalize="none"),
         {"fn": lambda s: torch.sigmoid(s - 2.0), "normalize": "none"}),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quiet", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    q = torch.randn(B, HQ, SQ, D, dtype=torch.float64, requires_grad=True)
    k = torch.randn(B, HKV, SKV, D, dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, HKV, SKV, D, dtype=torch.float64, requires_grad=True)
    dout = torch.randn(B, HQ, SQ, D, dtype=torch.float64)
    print(f"attention_engine {ae.__version__}: B={B} Hq={HQ} Hkv={HKV} Sq={SQ} Skv={SKV} D={D}, "
          "float64 on the CPU (reference executor)\n")
    rows, ok = [], True
    for name, attn, ref_args in variants():
        if not args.quiet:
            print(f"== {name}  [variant {attn.key}]")
            print(attn.graph_text() + attn.analysis())
        t0 = time.perf_counter()
        out = attn(q, k, v)
        grads = torch.autograd.grad(out, (q, k, v), dout)
        ms = 1e3 * (time.perf_counter() - t0)
        ref = plain_attention(q, k, v, **ref_args)
        ref_grads = torch.autograd.grad(ref, (q, k, v), dout)
        err = (out - ref).abs().max().item()
        gerr = max((a - b).abs().max().item() for a, b in zip(grads, ref_grads))
        good = err < 1e-10 and gerr < 1e-10
        ok &= good
        rows.append((name, err, gerr, ms, "ok" if good else "MISMATCH"))
    print(f"{'variant':<26}{'max|out-ref|':>14}{'max|grad-ref|':>15}{'fwd+bwd ms':>12}  check")
    for name, err, gerr, ms, verdict in rows:
        print(f"{name:<26}{err:>14.2e}{gerr:>15.2e}{ms:>12.1f}  {verdict}")
    print(f"\n{len(rows)} variants: {'all match plain PyTorch' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
