"""MLA decode (issue 18's targets: >= 3.6 TB/s memory-bound at B 128, Skv 4k-64k; >= 450
TFLOPS where compute-bound): `with_kvcache(q, kv, kv[..., :512], lens, block_table=...)` on a
paged latent cache (page 64, pages shuffled, check_lengths=False), replayed from a CUDA graph
and eagerly. "Effective" TB/s counts the cache read once (B x Skv x 576 x 2 bytes: V is K's
first columns), as FlashMLA's figure does, although more than 64 packed rows (Hq x Sq) make
several CTAs per sequence that each stream it (L2 serves the repeats, or not: the table does
not say); TFLOPS counts 2 x B x Hq x Sq x Skv x (576 + 512). Same-run baseline: SDPA on K and a
separate V, heads expanded by enable_gqa, from a CUDA graph: no fused SDPA backend takes head
dim 576, so this is likely its math backend (a weak baseline; "n/a" where it fails).

    python bench/mla_bench.py [--shapes 128x16x1x4k,...]   # B x Hq x Sq x Skv
    python bench/mla_bench.py --dry-run                    # CPU, tiny shapes: plumbing only
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import attention_engine as ae
from decode_bench import graphed, timed

D_LATENT, D_V, PAGE = 576, 512, 64
SHAPES = ("128x16x1x4k,128x16x1x16k,128x16x1x64k,128x128x1x4k,128x128x1x16k,"
          "128x128x2x4k,32x128x1x8k,1x16x1x64k")


def parse(shapes: str):
    for s in shapes.split(","):
        b, hq, sq, skv = s.split("x")
        skv = int(skv[:-1]) * 1024 if skv.endswith("k") else int(skv)
        yield int(b), int(hq), int(sq), skv


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default=SHAPES)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    dev, dtype = ("cpu", torch.float32) if args.dry_run else ("cuda", torch.bfloat16)
    shapes = "2x4x1x128,1x8x2x64" if args.dry_run else args.shapes
    attn = ae.compile()
    gen = torch.Generator(device=dev).manual_seed(0)
    print(f"MLA decode, {'CPU dry run' if args.dry_run else torch.cuda.get_device_name()}, "
          f"{dtype}, latent {D_LATENT} (V {D_V}), page {PAGE}")
    print("| B | Hq | Sq | Skv | ours graph TB/s (effective) | TFLOPS | µs | ours eager µs | SDPA graph TB/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for B, hq, sq, skv in parse(shapes):
        per = -(-skv // PAGE)
        pool = torch.randn(B * per, PAGE, 1, D_LATENT, device=dev, dtype=dtype, generator=gen)
        table = torch.randperm(B * per, device=dev, generator=gen).view(B, per).to(torch.int32)
        lens = torch.full((B,), skv, dtype=torch.int32, device=dev)
        q = torch.randn(B, sq, hq, D_LATENT, device=dev, dtype=dtype, generator=gen)

        def ours():
            with torch.no_grad():
                return attn.with_kvcache(q, pool, pool[..., :D_V], lens, block_table=table,
                                         check_lengths=False)
        nbytes = B * skv * D_LATENT * 2
        flops = 2 * B * hq * sq * skv * (D_LATENT + D_V)
        eager = timed(ours, args.iters)
        t = timed(graphed(ours), args.iters) if dev == "cuda" else eager
        sdpa = "n/a"
        try:
            k = pool[table.flatten().long()].view(B, per * PAGE, 1, D_LATENT)[:, :skv]
            k = k.transpose(1, 2).contiguous()  # [B, 1, Skv, 576]
            v = k[..., :D_V].contiguous()
            qs = q.transpose(1, 2)
            run = lambda: F.scaled_dot_product_attention(qs, k, v, enable_gqa=True)
            ts = timed(graphed(run) if dev == "cuda" else run, args.iters)
            sdpa = f"{nbytes / ts / 1e12:.2f}"
            del k, v
        except (RuntimeError, torch.OutOfMemoryError) as e:
            sdpa = f"n/a ({type(e).__name__})"
        print(f"| {B} | {hq} | {sq} | {skv} | {nbytes / t / 1e12:.2f} | {flops / t / 1e12:.0f} | "
              f"{t * 1e6:.1f} | {eager * 1e6:.1f} | {sdpa} |", flush=True)
        del pool, table, q
        if dev == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
