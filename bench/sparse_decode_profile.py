"""Where sparse decode spends its time: torch.profiler's kernel table for 5 calls of the dense
`with_kvcache` and of `BlockSparseAttention.with_kvcache` (10% of 64-key blocks kept per KV
head, index lists), B 8, Skv 32k, GQA 32:8, D 128, bf16, check_lengths=False
(bench/sparse_decode_bench.py's first case); then the host's ops by their own CPU time.

    PYTHONPATH=python python bench/sparse_decode_profile.py          # a CUDA GPU
"""
import sys, pathlib
import torch, attention_engine as ae
sys.path.insert(0, str(pathlib.Path(__file__).parent))
from kernel_table import python_profile
from torch.profiler import profile, ProfilerActivity
B, S, HQ, HKV, D, BS = 8, 32768, 32, 8, 128, 64
g = torch.Generator(device="cuda").manual_seed(0)
mk = lambda *s: torch.randn(*s, device="cuda", dtype=torch.bfloat16, generator=g)
kc, vc, q = mk(B, S, HKV, D), mk(B, S, HKV, D), mk(B, 1, HQ, D)
lens = torch.full((B,), S, device="cuda")
nk = S // BS
idx = torch.stack([torch.randperm(nk, device="cuda", generator=g)[:nk // 10] for _ in range(B * HKV)]).view(B, HKV, -1)
sparse = ae.seer.BlockSparseAttention(block_size=BS)
dense = ae.compile()
with torch.no_grad():
    for name, fn in (("dense", lambda: dense.with_kvcache(q, kc, vc, lens, check_lengths=False)),
                     ("sparse", lambda: sparse.with_kvcache(q, kc, vc, lens, idx, check_lengths=False))):
        for _ in range(3): fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
            for _ in range(5): fn()
            torch.cuda.synchronize()
        print(name)
        table = prof.key_averages()
        print(table.table(sort_by="cuda_time_total", row_limit=8, max_name_column_width=90))
        # the host's ops: an eager sparse call cost ~260 us whatever it kept (RESULTS, 26th session)
        print(table.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=90))
        python_profile(fn)
