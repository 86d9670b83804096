"""Where varlen's kernel route (AE_VARLEN=kernel) spends its time: torch.profiler's kernel table
for 16 causal documents in 16384 tokens (16 heads, D 128, bf16), random lengths then equal ones
(bench/varlen_bench.py's cases), forward only. Written to diagnose the random-length slowdown
(bench/RESULTS.md, 2026-12-05).

    PYTHONPATH=python python bench/varlen_profile.py          # a CUDA GPU
"""
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

import attention_engine as ae
from attention_engine import mods
from varlen_bench import lengths


def main() -> int:
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 1
    os.environ["AE_VARLEN"] = "kernel"
    attn = ae.compile(mask_mod=mods.causal)
    for skew in (1, 0):
        lens = lengths(16384, 16, skew)
        T = int(lens.sum())
        cu = torch.cat([torch.zeros(1, dtype=torch.int64), lens.cumsum(0)]).cuda()
        q, k, v = (torch.randn(T, 16, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        with torch.no_grad():
            for _ in range(3):
                attn.varlen(q, k, v, cu, cu)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    attn.varlen(q, k, v, cu, cu)
                torch.cuda.synchronize()
        print(f"{'random' if skew else 'equal'} lengths {lens.tolist()}, 5 calls")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12,
                                        max_name_column_width=60))
    return 0


if __name__ == "__main__":
    sys.exit(main())
