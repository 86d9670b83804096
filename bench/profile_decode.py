"""Where a decode call's time goes: the kernels each entry point launches (CUDA time per call)
and the host time per call, by torch.profiler, for the plain call and with_kvcache (checked and
check_lengths=False) at one shape (default B1 Sq1 Skv32k, Hq 32, Hkv 8, D 128, bf16).

    PYTHONPATH=python python bench/profile_decode.py [--shape 1x1x32k] [--iters 20]
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import torch
from torch.profiler import ProfilerActivity, profile

import attention_engine as ae
from decode_bench import HKV, HQ, D, parse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="1x1x32k")
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    (B, Sq, Skv), = parse(args.shape)
    attn = ae.compile()
    mk = lambda *s: torch.randn(*s, device="cuda", dtype=torch.bfloat16)
    q, kc, vc = mk(B, Sq, HQ, D), mk(B, Skv, HKV, D), mk(B, Skv, HKV, D)
    lens = torch.full((B,), Skv, dtype=torch.int32, device="cuda")
    cases = {
        "plain": lambda: attn(q.transpose(1, 2), kc.transpose(1, 2), vc.transpose(1, 2)),
        "cache": lambda: attn.with_kvcache(q, kc, vc, lens),
        "cache nocheck": lambda: attn.with_kvcache(q, kc, vc, lens, check_lengths=False),
    }
    with torch.no_grad():
        for label, fn in cases.items():
            for _ in range(5):
                fn()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.iters):
                fn()
            host = (time.perf_counter() - t0) / args.iters  # launches queued, not waited for
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(args.iters):
                    fn()
                torch.cuda.synchronize()
            print(f"== {label}: host {host * 1e6:.1f} µs per call")
            for e in sorted(prof.key_averages(), key=lambda e: -e.device_time_total):
                if e.device_time_total > 0:
                    print(f"   {e.device_time_total / args.iters:8.1f} µs  x{e.count / args.iters:.0f}  "
                          f"{e.key[:90]}")
            # Host: the ops' own CPU time per call, and the Python functions' (cProfile).
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(args.iters):
                    fn()
                torch.cuda.synchronize()
            for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]:
                print(f"   host {e.self_cpu_time_total / args.iters:8.1f} µs self  "
                      f"x{e.count / args.iters:.0f}  {e.key[:80]}")
            pr = cProfile.Profile()
            pr.enable()
            for _ in range(args.iters):
                fn()
            pr.disable()
            torch.cuda.synchronize()
            st = pstats.Stats(pr)
            rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:10]  # by own time
            for (file, line, name), (cc, nc, tt, ct, _) in rows:
                print(f"   py {tt / args.iters * 1e6:8.1f} µs own {ct / args.iters * 1e6:8.1f} "
                      f"µs cum  {file.split('/')[-1]}:{line} {name}")


if __name__ == "__main__":
    main()
