"""What gradients of captured tensors cost in the backward (issue 17: "a learnable bias table
or per-head slopes costs little over the same mod without gradients"): fwd+bwd TFLOPS of a
relative bias (a [H, 2 * 256 + 1] table) and of ALiBi (per-head slopes), causal, with the
tensor requiring grad and without, and with AE_GRAD_SINK=global (global atomics instead of
the shared-memory copy; both sum a call site's additions in registers first). bf16, D 128,
16k tokens (B = 16384 / S), 16 heads.

    python bench/captured_grads.py [--seq 8192]
"""
import argparse
import os

import torch
import triton.testing as tt

import attention_engine as ae
from attention_engine import mods

ap = argparse.ArgumentParser()
ap.add_argument("--seq", type=int, default=8192)
S = ap.parse_args().seq
B, H, D = max(1, 16384 // S), 16, 128
g = torch.Generator(device="cuda").manual_seed(0)
q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16, generator=g,
                       requires_grad=True) for _ in range(3))
do = torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16, generator=g)
flops = 3.5 * 4 * B * H * S * S * D * 0.5


def tflops(attn, tensor):
    inputs = (q, k, v, tensor) if tensor.requires_grad else (q, k, v)
    fn = lambda: torch.autograd.grad(attn(q, k, v), inputs, do)  # noqa: E731
    fn()
    return flops / tt.do_bench(fn, warmup=30, rep=200, return_mode="median") / 1e9


rows = []
for name, make, tensor in [
        ("relative bias", lambda t: mods.relative_bias(t, 256),
         0.1 * torch.randn(H, 2 * 256 + 1, device="cuda")),
        ("alibi slopes", mods.alibi, mods.alibi_slopes(H, device="cuda"))]:
    fixed = tflops(ae.compile(make(tensor), mods.causal), tensor)
    learned = tensor.clone().requires_grad_()
    attn = ae.compile(make(learned), mods.causal)
    shared = tflops(attn, learned)
    os.environ["AE_GRAD_SINK"] = "global"
    try:
        glob = tflops(attn, learned)
    finally:
        del os.environ["AE_GRAD_SINK"]
    rows.append(f"| {name} | {fixed:.0f} | {shared:.0f} ({shared / fixed:.2f}x) | "
                f"{glob:.0f} ({glob / fixed:.2f}x) |")
print(f"fwd+bwd TFLOPS, causal, S {S}, D {D}, {torch.cuda.get_device_name()}")
print("| mod | no gradient | gradient (planned sink) | gradient (AE_GRAD_SINK=global) |")
print("|---|---|---|---|")
print("\n".join(rows))
