"""Where retention's time goes: the causal softmax baseline, the decay score_mod (as pow and
as exp2) under softmax, AttentionEngine's retention normalization without and with the decay,
and normalize="none", each timed fwd and fwd+bwd (do_bench medians, one run). B = 16384 / S,
H 16, D 128, bf16, causal.

    python bench/retention_parts.py [--seq 16384]
"""
import argparse

import torch

import attention_engine as ae
from attention_engine import mods
from baselines import timed_ms

ap = argparse.ArgumentParser()
ap.add_argument("--seq", type=int, default=16384)
args = ap.parse_args()
S, H, D = args.seq, 16, 128
B = max(1, 16384 // S)
torch.manual_seed(0)
q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
           for _ in range(3))
do = torch.randn_like(q)
gamma = 1 - 2.0 ** (-5 - torch.arange(H, device="cuda", dtype=torch.float32))
log2g = torch.log2(gamma)
pow_decay = lambda s, b, h, qi, ki: s * gamma[h] ** (qi - ki).float()  # noqa: E731
exp_decay = lambda s, b, h, qi, ki: s * torch.exp2(log2g[h] * (qi - ki).float())  # noqa: E731
ret = ae.normalizers.retention
rows = [
    ("softmax", ae.compile(mask_mod=mods.causal)),
    ("softmax + pow decay", ae.compile(pow_decay, mods.causal)),
    ("softmax + exp2 decay", ae.compile(exp_decay, mods.causal)),
    ("none", ae.compile(mask_mod=mods.causal, normalize="none")),
    ("none + exp2 decay", ae.compile(exp_decay, mods.causal, normalize="none")),
    ("retention", ae.compile(mask_mod=mods.causal, normalize=ret)),
    ("retention + exp2 decay", ae.compile(exp_decay, mods.causal, normalize=ret)),
    ("retention + pow decay", ae.compile(pow_decay, mods.causal, normalize=ret)),
]
flops = 4 * B * H * S * S * D * 0.5


def timed(fn, backward):
    return timed_ms(fn, q, k, v, do, backward)


print(f"H200 bf16 causal B{B} H{H} S{S} D{D} TFLOPS (fwd+bwd counts 3.5x the forward's flops)")
print(f"{'':26} {'fwd':>6} {'fwd+bwd':>8}  backend fwd / bwd")
for name, fn in rows:
    be = f"{fn.backend_for(q, k, v)} / {fn.backend_for(q, k, v, backward=True)}"
    f, fb = timed(fn, False), timed(fn, True)
    print(f"{name:26} {flops / f / 1e9:6.0f} {3.5 * flops / fb / 1e9:8.0f}  {be}", flush=True)
