"""The gfx90a forward on an AMD GPU (ROCm's PyTorch; an MI210 / MI250 GCD): TFLOPS beside
PyTorch SDPA (FlashAttention convention: B x H = 16k tokens x hidden 2048 / D), each case's max
difference from SDPA (or from the reference executor where SDPA has no such variant), and which
kernel ran. Written before any MI250 was available: run it first on one, with the GPU tests
(pytest -m amd_gpu tests/python/test_gpu_gfx90a.py).

    PYTHONPATH=python python bench/amd_fwd.py [--seqs 4096,16384] [--dims 64,128] [--dtype bf16]
"""
import argparse

import torch
import torch.nn.functional as F

import attention_engine as ae
from attention_engine import mods


def ms(fn, warmup=10, reps=50):
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqs", default="4096,16384")
    ap.add_argument("--dims", default="64,128")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    args = ap.parse_args()
    assert torch.cuda.is_available() and torch.version.hip, "needs ROCm's PyTorch and an AMD GPU"
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  hip {torch.version.hip}")
    print(f"{'case':<10} {'S':>6} {'D':>4} {'ours TFLOPS':>12} {'SDPA':>8} {'max diff':>9}  kernel")
    for S in map(int, args.seqs.split(",")):
        for D in map(int, args.dims.split(",")):
            H = 2048 // D
            B = max(1, 16384 // S)
            q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=dtype) for _ in range(3))
            cases = {
                "plain": (ae.compile(), lambda: F.scaled_dot_product_attention(q, k, v)),
                "causal": (ae.compile(mask_mod=mods.causal),
                           lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
                "alibi": (ae.compile(mods.alibi(mods.alibi_slopes(H).cuda()), mods.causal), None),
                "softcap": (ae.compile(mods.softcap(30.0)), None),
            }
            for name, (attn, sdpa) in cases.items():
                flops = 4 * B * H * S * S * D / (2 if name in ("causal", "alibi") else 1)
                t = ms(lambda: attn(q, k, v))
                out = attn(q, k, v).float()
                if sdpa is not None:
                    t_ref, ref = ms(sdpa), sdpa().float()
                else:  # the reference executor on two heads of one batch (in float32)
                    t_ref = float("nan")
                    out = out[:1, :2]
                    ref = attn.reference(q[:1, :2].float(), k[:1, :2].float(), v[:1, :2].float())
                diff = (out - ref).abs().max().item()
                print(f"{name:<10} {S:>6} {D:>4} {flops / t / 1e9:>12.1f} {flops / t_ref / 1e9:>8.1f} "
                      f"{diff:>9.2e}  {attn.backend_for(q, k, v)}")


if __name__ == "__main__":
    main()
