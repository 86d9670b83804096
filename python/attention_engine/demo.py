"""The demo (scripts/demo.sh): compiles a handful of variants, prints each op graph, runs
them forward and backward on small CPU tensors and checks them against plain PyTorch math.
With a CUDA GPU it also runs the fused kernels and prints their speed beside SDPA and
FlexAttention (torch.compile) in one short table.

    python -m attention_engine.demo [--quiet] [--no-gpu]
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import torch

import attention_engine as ae
from attention_engine import mods

B, HQ, HKV, SQ, SKV, D = 2, 4, 2, 37, 53, 16


def plain_attention(q, k, v, bias=None, keep=None, normalize="softmax", fn=None):
    """Attention written out in plain PyTorch (float64), the demo's independent check."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if fn is not None:
        s = fn(s)
    if bias is not None:
        s = s + bias
    if normalize == "softmax":
        if keep is not None:
            s = s.masked_fill(~keep, float("-inf"))
        p = torch.softmax(s, -1).nan_to_num(0.0)
    else:
        p = s if keep is None else s.masked_fill(~keep, 0.0)
    return p @ v


def variants():
    qi = torch.arange(SQ).view(-1, 1)
    ki = torch.arange(SKV).view(1, -1)
    slopes = mods.alibi_slopes(HQ).double()
    window = 8
    return [
        ("plain softmax", ae.compile(), {}),
        ("causal", ae.compile(mask_mod=mods.causal), {"keep": qi >= ki}),
        ("ALiBi + causal", ae.compile(mods.alibi(slopes), mods.causal),
         {"bias": slopes.view(1, -1, 1, 1) * (ki - qi), "keep": qi >= ki}),
        ("softcap 5", ae.compile(mods.softcap(5.0)),
         {"fn": lambda s: 5.0 * torch.tanh(s / 5.0)}),
        ("sliding window 8", ae.compile(mask_mod=mods.sliding_window(window)),
         {"keep": (qi >= ki) & (qi - ki <= window)}),
        ("sigmoid, normalize=none", ae.compile(mods.sigmoid(-2.0), normalize="none"),
         {"fn": lambda s: torch.sigmoid(s - 2.0), "normalize": "none"}),
    ]


SPEED_VARIANTS = ("causal", "ALiBi + causal", "softcap 30 + causal", "sliding window 1024")


def _speed_problem(name: str, H: int, device: str):
    """(score_mod, mask_mod, SDPA's is_causal or None when SDPA cannot run it)."""
    if name == "causal":
        return None, mods.causal, True
    if name == "ALiBi + causal":
        return mods.alibi(mods.alibi_slopes(H, device=device)), mods.causal, None
    if name == "softcap 30 + causal":
        return mods.softcap(30.0), mods.causal, None
    return None, mods.sliding_window(1024), None


def _timer(device: str, warmup: int, reps: int):
    def cuda_ms(fn):
        for _ in range(warmup):
            fn()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(reps):
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        return sorted(times)[len(times) // 2]

    def cpu_ms(fn):
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t))
        return sorted(times)[len(times) // 2]
    return cuda_ms if device == "cuda" else cpu_ms


def speed_rows(B=2, H=16, S=4096, D=128, warmup=5, reps=20, device="cuda",
               dtype=torch.bfloat16, compile_flex=True) -> list:
    """[(variant, method, fwd TFLOPS, fwd+bwd TFLOPS)] for attention_engine, SDPA (where it
    can express the variant) and FlexAttention; None where a method cannot run (FlexAttention
    has no backward on the CPU). FLOPs: 4 B H S^2 D x the kept fraction, fwd+bwd 3.5 x fwd."""
    from torch.nn.attention import flex_attention as tflex

    flex = torch.compile(tflex.flex_attention) if compile_flex else tflex.flex_attention
    timer = _timer(device, warmup, reps)
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v, dout = (torch.randn(B, H, S, D, device=device, dtype=dtype, generator=gen)
                     for _ in range(4))
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    rows = []
    for name in SPEED_VARIANTS:
        score_mod, mask_mod, sdpa_causal = _speed_problem(name, H, device)
        keep = create_kept(mask_mod, S, device)
        flops = 4.0 * B * H * S * S * D * keep
        block_mask = tflex.create_block_mask(mask_mod, None, None, S, S, device=device)
        attn = ae.compile(score_mod, mask_mod)
        methods = [("attention_engine", lambda: attn(q, k, v))]
        if sdpa_causal is not None:
            methods.append(("SDPA", lambda: torch.nn.functional.scaled_dot_product_attention(
                q, k, v, is_causal=sdpa_causal)))
        methods.append(("FlexAttention", lambda: flex(q, k, v, score_mod=score_mod,
                                                      block_mask=block_mask)))
        for method, fn in methods:
            fwd_ms = fb_ms = None
            try:
                with torch.no_grad():
                    fwd_ms = timer(fn)
                fb_ms = timer(lambda: torch.autograd.grad(fn(), (q, k, v), dout))
            except Exception:  # noqa: BLE001  (a method that cannot run this shows n/a)
                pass
            rows.append((name, method, None if fwd_ms is None else flops / fwd_ms / 1e9,
                         None if fb_ms is None else 3.5 * flops / fb_ms / 1e9))
    return rows


def create_kept(mask_mod, S: int, device: str) -> float:
    """The fraction of the S x S scores mask_mod keeps."""
    keep = ae.create_mask(mask_mod, 1, 1, S, S, device=device)
    return keep.float().mean().item()


def format_speed_table(rows: list, header: str = "") -> str:
    def cell(x):
        return "n/a" if x is None else f"{x:.0f}"
    lines = [header] if header else []
    lines.append(f"{'variant':<22}{'method':<18}{'fwd TFLOPS':>11}{'fwd+bwd TFLOPS':>16}")
    for variant, method, fwd, fb in rows:
        lines.append(f"{variant:<22}{method:<18}{cell(fwd):>11}{cell(fb):>16}")
    return "\n".join(lines)


def gpu_speed() -> str:
    B, H, S, D = 2, 16, 4096, 128
    rows = speed_rows(B, H, S, D)
    name = torch.cuda.get_device_name()
    return format_speed_table(rows, f"\nOn {name}: bf16, B={B} H={H} S={S} D={D} "
                                    "(FlexAttention under torch.compile)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quiet", action="store_true", help="print the table only")
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU speed table")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    q = torch.randn(B, HQ, SQ, D, dtype=torch.float64, requires_grad=True)
    k = torch.randn(B, HKV, SKV, D, dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, HKV, SKV, D, dtype=torch.float64, requires_grad=True)
    dout = torch.randn(B, HQ, SQ, D, dtype=torch.float64)
    print(f"attention_engine {ae.__version__}: B={B} Hq={HQ} Hkv={HKV} Sq={SQ} Skv={SKV} D={D}, "
          "float64 on the CPU (reference executor)\n")
    rows, ok = [], True
    for name, attn, ref_args in variants():
        if not args.quiet:
            print(f"== {name}  [variant {attn.key}]")
            print(attn.graph_text() + attn.analysis())
        t0 = time.perf_counter()
        out = attn(q, k, v)
        grads = torch.autograd.grad(out, (q, k, v), dout)
        ms = 1e3 * (time.perf_counter() - t0)
        ref = plain_attention(q, k, v, **ref_args)
        ref_grads = torch.autograd.grad(ref, (q, k, v), dout)
        err = (out - ref).abs().max().item()
        gerr = max((a - b).abs().max().item() for a, b in zip(grads, ref_grads))
        good = err < 1e-10 and gerr < 1e-10
        ok &= good
        rows.append((name, err, gerr, ms, "ok" if good else "MISMATCH"))
    print(f"{'variant':<26}{'max|out-ref|':>14}{'max|grad-ref|':>15}{'fwd+bwd ms':>12}  check")
    for name, err, gerr, ms, verdict in rows:
        print(f"{name:<26}{err:>14.2e}{gerr:>15.2e}{ms:>12.1f}  {verdict}")
    print(f"\n{len(rows)} variants: {'all match plain PyTorch' if ok else 'MISMATCH'}")
    if torch.cuda.is_available() and not args.no_gpu:
        print(gpu_speed())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
