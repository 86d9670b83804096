"""Decode against a KV cache (issue 18's table): GB/s of K and V read (B x Skv x Hkv x (D + Dv)
x 2 bytes over the median time) and µs per call, bf16, GQA 32:8, D 128, no mask. Ours: the
plain call on the cache's first Skv positions (`attn(q, k, v)`, what the issue measured; "ours
decode" and "ours cache decode": the same with AE_DECODE=1, the decode template),
`with_kvcache` on a contiguous cache (checked lengths, and check_lengths=False: no host
read; and that call replayed from a CUDA graph, next to SDPA cuDNN's) and on paged caches
(page 64 and 16, pages shuffled, check_lengths=False: the kernels read the pages in place; page
64 also from a CUDA graph);
SDPA cuDNN and flash (enable_gqa) and FlexAttention under torch.compile in the same run.

    python bench/decode_bench.py [--shapes 1x1x32k,8x1x8k,...]
    python bench/decode_bench.py --dry-run   # CPU, tiny shapes, float32: plumbing only
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch
import torch.nn.functional as F

import attention_engine as ae

HQ, HKV, D = 32, 8, 128
BHSD = {"ours plain", "ours decode", "sdpa cudnn", "sdpa flash", "flex", "sdpa cudnn graph"}  # the cases taking [B, H, S, D]
SHAPES = "1x1x32k,8x1x8k,32x1x4k,4x1x128k,4x4x128k"  # B x Sq x Skv


def parse(shapes: str):
    for s in shapes.split(","):
        b, sq, skv = s.split("x")
        yield int(b), int(sq), int(skv[:-1]) * 1024 if skv.endswith("k") else int(skv)


def timed(fn, iters: int) -> float:
    """Median seconds per call (CUDA events on a GPU, wall clock on the CPU)."""
    fn()
    if not torch.cuda.is_available():
        import time
        ts = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)
    for _ in range(3):
        fn()
    ts = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / 1e3)
    return statistics.median(ts)


def with_env(name: str, value: str, fn):
    """fn run with the environment variable set (the engine reads AE_* per call), then restored:
    two routes of the engine timed side by side in one run."""
    def run():
        old = os.environ.get(name)
        os.environ[name] = value
        try:
            return fn()
        finally:
            if old is None:
                del os.environ[name]
            else:
                os.environ[name] = old
    return run


def with_decode(fn):
    """fn with AE_DECODE=1: the decode template, beside the prefill templates."""
    return with_env("AE_DECODE", "1", fn)


def graphed(fn):
    """fn captured once in a CUDA graph (as a serving loop runs decode): a call replays it and
    returns the graph's output. Host overhead then no longer counts, for ours or SDPA."""
    with torch.no_grad():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out = fn()

    def run():
        g.replay()
        return out
    return run


def paged(k_cache, v_cache, page_size, gen):
    """The contiguous cache's contents in shuffled pages: (k_pages, v_pages, block_table)."""
    B, S = k_cache.shape[:2]
    per = S // page_size
    perm = torch.randperm(B * per, generator=gen).to(k_cache.device)
    table = perm.view(B, per).to(torch.int32)
    kp = torch.empty(B * per, page_size, *k_cache.shape[2:], dtype=k_cache.dtype, device=k_cache.device)
    vp = torch.empty_like(kp)
    kp[perm] = k_cache.reshape(B * per, page_size, *k_cache.shape[2:])
    vp[perm] = v_cache.reshape(B * per, page_size, *v_cache.shape[2:])
    return kp, vp, table


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default=SHAPES)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    dev, dtype = ("cpu", torch.float32) if args.dry_run else ("cuda", torch.bfloat16)
    hq, hkv, d = (4, 2, 16) if args.dry_run else (HQ, HKV, D)
    shapes = "2x1x64,1x4x100" if args.dry_run else args.shapes
    gen = torch.Generator().manual_seed(0)
    attn = ae.compile()
    flex = None
    if dev == "cuda":
        from torch.nn.attention.flex_attention import flex_attention
        flex = torch.compile(flex_attention, dynamic=False)

    print(f"decode, {'CPU dry run' if args.dry_run else torch.cuda.get_device_name()}, "
          f"Hq {hq}, Hkv {hkv}, D {d}: GB/s of K+V (µs per call)")
    for B, Sq, Skv in parse(shapes):
        mk = lambda *s: torch.randn(*s, generator=gen).to(dev, dtype)
        q = mk(B, Sq, hq, d)
        kc, vc = mk(B, Skv, hkv, d), mk(B, Skv, hkv, d)
        lens = torch.full((B,), Skv, dtype=torch.int32, device=dev)
        kv_bytes = 2 * B * Skv * hkv * d * q.element_size()
        qh, kh, vh = q.transpose(1, 2), kc.transpose(1, 2), vc.transpose(1, 2)  # [B, H, S, D]
        cases = {
            "ours plain": lambda: attn(qh, kh, vh),
            "ours cache": lambda: attn.with_kvcache(q, kc, vc, lens),
            # no host read of the lengths (the serving loop's call)
            "ours cache nocheck": lambda: attn.with_kvcache(q, kc, vc, lens, check_lengths=False),
        }
        cases["ours decode"] = with_decode(cases["ours plain"])
        cases["ours cache decode"] = with_decode(cases["ours cache"])
        for ps in (64, 16):
            if Skv % ps == 0:
                kp, vp, table = paged(kc, vc, ps, gen)
                # unchecked, as "ours cache nocheck": the pages read in place, no host read
                cases[f"ours paged{ps}"] = (lambda kp=kp, vp=vp, t=table:
                                            attn.with_kvcache(q, kp, vp, lens, block_table=t,
                                                              check_lengths=False))
        if dev == "cuda":
            from torch.nn.attention import SDPBackend, sdpa_kernel
            for label, backend in (("sdpa cudnn", SDPBackend.CUDNN_ATTENTION),
                                   ("sdpa flash", SDPBackend.FLASH_ATTENTION)):
                def run(backend=backend):
                    with sdpa_kernel(backend):
                        return F.scaled_dot_product_attention(qh, kh, vh, enable_gqa=True)
                cases[label] = run
            cases["flex"] = lambda: flex(qh, kh, vh, enable_gqa=True)
            # In CUDA graphs: ours without the host read of the lengths (capturable), SDPA cuDNN.
            cases["ours cache graph"] = graphed(cases["ours cache nocheck"])
            if "ours paged64" in cases:
                cases["ours paged64 graph"] = graphed(cases["ours paged64"])
            cases["sdpa cudnn graph"] = graphed(cases["sdpa cudnn"])
        ref = None
        line = f"B{B} Sq{Sq} Skv{Skv // 1024 if Skv >= 1024 else Skv}{'k' if Skv >= 1024 else ''}"
        for label, fn in cases.items():
            try:
                with torch.no_grad():
                    out = fn()
                    if label in BHSD:  # -> [B, Sq, H, D], as with_kvcache returns
                        out = out.transpose(1, 2)
                    if ref is None:
                        ref = out.float()
                    err = ((out.float() - ref).norm() / ref.norm()).item()
                    if err > 2e-2:
                        raise RuntimeError(f"differs from ours plain by {err:.1e}")
                    t = timed(fn, args.iters)
                line += f"  {label} {kv_bytes / t / 1e9:6.0f} ({t * 1e6:6.1f})"
            except Exception as e:  # noqa: BLE001
                print(f"{label} at {line.split()[0:3]}: {type(e).__name__}: {str(e)[:120]}",
                      file=sys.stderr)
                line += f"  {label} n/a"
        print(line, flush=True)


if __name__ == "__main__":
    main()
