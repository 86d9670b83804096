"""Sparse decode (the learned-sparsity issue's target: at 10% of the key blocks kept, >= 6x
faster than dense decode at B 8, Skv 32k): `BlockSparseAttention.with_kvcache` with
SeerAttention's index lists (64-key blocks picked at random per KV head) against the dense
`with_kvcache` on the same cache, bf16, GQA 32:8, D 128, one query per sequence, no grad,
check_lengths=False (nothing read back), eagerly and from CUDA graphs. GB/s counts the K and V
bytes each method needs (the kept blocks' for sparse), so a method's waste shows as a lower
figure; "x dense" is dense's time over the method's.

    PYTHONPATH=python python bench/sparse_decode_bench.py [--shapes 8x32k,1x128k] [--keep 0.1,0.25]
    PYTHONPATH=python python bench/sparse_decode_bench.py --dry-run   # CPU, tiny: plumbing only
"""
from __future__ import annotations

import argparse
import sys

import torch

import attention_engine as ae
from decode_bench import timed

HQ, HKV, D, BLOCK = 32, 8, 128, 64


def graphed(fn):
    """fn captured in a CUDA graph (after a warm-up call), replayed per call."""
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="8x32k,1x128k", help="B x Skv")
    ap.add_argument("--keep", default="0.1,0.25")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    cuda = not args.dry_run and torch.cuda.is_available()
    dev, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    shapes = [(2, 512)] if not cuda else [
        (int(b), int(s[:-1]) * 1024 if s.endswith("k") else int(s))
        for b, s in (x.split("x") for x in args.shapes.split(","))]
    dense = ae.compile()
    sparse = ae.seer.BlockSparseAttention(block_size=BLOCK)
    rows = []
    for B, S in shapes:
        gen = torch.Generator(device=dev).manual_seed(0)
        mk = lambda *shape: torch.randn(*shape, device=dev, dtype=dtype, generator=gen)
        kc, vc, q = mk(B, S, HKV, D), mk(B, S, HKV, D), mk(B, 1, HQ, D)
        lens = torch.full((B,), S, device=dev)
        nk = S // BLOCK
        kv_bytes = B * S * HKV * 2 * D * kc.element_size()
        with torch.no_grad():
            run_dense = lambda: dense.with_kvcache(q, kc, vc, lens, check_lengths=False)
            t_dense = timed(run_dense, args.reps)
            t_dense_g = timed(graphed(run_dense), args.reps) if cuda else float("nan")
            rows.append((B, S, "1.00", "dense", t_dense, t_dense_g, kv_bytes, t_dense, t_dense_g))
            for keep in map(float, args.keep.split(",")):
                n = max(1, round(keep * nk))
                idx = torch.stack([torch.randperm(nk, device=dev, generator=gen)[:n]
                                   for _ in range(B * HKV)]).view(B, HKV, n)
                run = lambda: sparse.with_kvcache(q, kc, vc, lens, idx, check_lengths=False)
                out = run()
                want = sparse.with_kvcache(q.float(), kc.float(), vc.float(), lens, idx) \
                    if not cuda else None
                if want is not None:
                    assert torch.allclose(out.float(), want, atol=1e-3), "sparse decode differs"
                t = timed(run, args.reps)
                t_g = timed(graphed(run), args.reps) if cuda else float("nan")
                rows.append((B, S, f"{n / nk:.2f}", "sparse", t, t_g, kv_bytes * n / nk,
                             t_dense, t_dense_g))
    print(f"sparse decode, GQA {HQ}:{HKV}, D {D}, block {BLOCK}, "
          + (torch.cuda.get_device_name() if cuda else "CPU dry run"))
    print("| B | Skv | kept | method | µs eager | µs graph | GB/s graph | × dense eager | × dense graph |")
    print("|---|---|---|---|---|---|---|---|---|")
    for B, S, kept, name, t, tg, nbytes, td, tdg in rows:
        print(f"| {B} | {S} | {kept} | {name} | {t * 1e6:.0f} | {tg * 1e6:.0f} | "
              f"{nbytes / tg / 1e9:.0f} | {td / t:.2f} | {tdg / tg:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
