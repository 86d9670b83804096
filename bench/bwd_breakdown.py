"""Where the time of one forward+backward goes, kernel by kernel (torch.profiler, CUDA time
per call), for attention_engine and SDPA flash / cuDNN in the same process: B = 16384 / S,
H = 16, D = 128, bf16. For finding the passes around the main kernels (row sums, casts,
zero fills) that cost more than their bytes.

    python bench/bwd_breakdown.py [--seq 4096] [--causal] [--retention]

--retention times RetNet's decay with AttentionEngine's retention normalization (causal)
against the causal baselines.
"""
import argparse
import collections

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import attention_engine as ae
from attention_engine import mods

ap = argparse.ArgumentParser()
ap.add_argument("--seq", type=int, default=4096)
ap.add_argument("--causal", action="store_true")
ap.add_argument("--iters", type=int, default=10)
ap.add_argument("--retention", action="store_true")
args = ap.parse_args()
if args.retention:
    args.causal = True
S, H, D = args.seq, 16, 128
B = max(1, 16384 // S)
torch.manual_seed(0)
q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
           for _ in range(3))
do = torch.randn_like(q)
attn = ae.compile(mask_mod=mods.causal) if args.causal else ae.compile()
if args.retention:
    gamma = 1 - 2.0 ** (-5 - torch.arange(H, device="cuda", dtype=torch.float32))
    attn = ae.compile(lambda s, b, h, q_idx, kv_idx: s * gamma[h] ** (q_idx - kv_idx).float(),
                      mods.causal, normalize=ae.normalizers.retention)


def sdpa(backend):
    def f(q, k, v):
        with torch.nn.attention.sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=args.causal)
    return f


cases = [("attention_engine", attn), ("sdpa_flash", sdpa(torch.nn.attention.SDPBackend.FLASH_ATTENTION)),
         ("sdpa_cudnn", sdpa(torch.nn.attention.SDPBackend.CUDNN_ATTENTION))]
flops = 3.5 * 4 * B * H * S * S * D * (0.5 if args.causal else 1.0)
for name, fn in cases:
    step = lambda: torch.autograd.grad(fn(q, k, v), (q, k, v), do)  # noqa: E731
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(args.iters):
            step()
        torch.cuda.synchronize()
    per = collections.Counter()
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            per[e.name] += e.device_time / args.iters  # microseconds per call
    total = sum(per.values())
    print(f"== {name}: {total:.0f} us of kernels per fwd+bwd, {flops / total / 1e6:.0f} TFLOPS "
          f"(S={S} B={B}{' causal' if args.causal else ''})")
    for kname, us in per.most_common(12):
        print(f"  {us:8.1f} us {100 * us / total:5.1f}%  {kname[:90]}")
