"""The gate-training forward's cost (the learned-sparsity issue's target: <= 1.15x the plain
forward): `seer.attention_with_pooling` (the forward that also writes each query row's
largest score per 64-key block, then the pooling of those into the map) against the same
variant's ordinary forward, bf16, B 1, H 32, D 128, causal, SeerAttention's block of 64. Times
are CUDA-event medians; "x fwd" is the gate-training call over the forward. The block maxima
take 4 * H * S * S / 64 bytes (fp32) for the call.

    PYTHONPATH=python python bench/pooled_bench.py [--seqlens 8k,16k,32k] [--block 64]
    PYTHONPATH=python python bench/pooled_bench.py --dry-run   # CPU, tiny: plumbing only
    PYTHONPATH=python python bench/pooled_bench.py --profile   # + torch.profiler's kernel table
                                                               # of the gate-training call (GPU)
"""
from __future__ import annotations

import argparse

import torch

import attention_engine as ae
from decode_bench import timed
from kernel_table import profile_calls

H, D = 32, 128


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqlens", default="8k,16k,32k")
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--profile", action="store_true",
                    help="after each length, the kernels of 3 gate-training calls (torch.profiler)")
    args = ap.parse_args()
    cuda = not args.dry_run and torch.cuda.is_available()
    dev, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    seqlens = [256] if not cuda else [int(s[:-1]) * 1024 if s.endswith("k") else int(s)
                                      for s in args.seqlens.split(",")]
    heads = H if cuda else 2
    attn = ae.compile(mask_mod=ae.mods.causal)
    print("| S | fwd ms | gate-training ms | x fwd | block maxima MB | backend |")
    print("|---|---|---|---|---|---|")
    for S in seqlens:
        gen = torch.Generator(device=dev).manual_seed(0)
        q, k, v = (torch.randn(1, heads, S, D, device=dev, dtype=dtype, generator=gen)
                   for _ in range(3))
        with torch.no_grad():
            t_fwd = timed(lambda: attn(q, k, v), args.reps)
            t_pool = timed(lambda: ae.seer.attention_with_pooling(attn, q, k, v, args.block),
                           args.reps)
        mb = 4 * heads * S * -(-S // args.block) / 2**20
        print(f"| {S} | {t_fwd * 1e3:.2f} | {t_pool * 1e3:.2f} | {t_pool / t_fwd:.3f} | {mb:.0f} "
              f"| {attn.backend_for(q, k, v)} |")
        if args.profile and cuda:
            profile_calls(lambda: ae.seer.attention_with_pooling(attn, q, k, v, args.block))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
