"""Linear attention against flash-linear-attention (the linear-attention issue's targets) and
our own softmax causal attention, bf16, B * T = 16k tokens, H 16, D 128, times as CUDA-event
medians (ms): forward, and forward + backward (ours: the fused kernels both ways; the backward
from a given dO by torch.autograd.grad, nothing accumulated into .grad: until the
twenty-seventh session `.float().sum().backward()`, whose casts, sum and gradient accumulation
were about 0.4 ms of every method's fwd+bwd at 16k tokens). FLA
(`fla-core`, Triton) is timed where importable (`--fla-path DIR`: a folder holding the unpacked
wheel, the GPU machine has no network); its layout [B, T, H, D]. Then the decode step: GB/s of the state read and written
(fp32), B 64, H 32, D 128, per call and replayed from a CUDA graph (without the host's work).

    PYTHONPATH=python python bench/linear_bench.py [--seqlens 4k,8k,16k] [--fla-path DIR] [--methods gla]
    PYTHONPATH=python python bench/linear_bench.py --dry-run   # CPU, tiny: plumbing only
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

import attention_engine as ae
from decode_bench import timed
from sparse_decode_bench import graphed
from kernel_table import profile_calls, python_profile

H, D, TOKENS = 16, 128, 16 * 1024


def fwd_bwd(out, leaves, dout):
    """The backward of one forward's output from dout, into fresh gradients (none kept)."""
    return torch.autograd.grad(out, leaves, dout)


def _fla(path):
    if path:
        sys.path.insert(0, path)
    try:
        from fla.ops.retention import chunk_retention
        from fla.ops.simple_gla import chunk_simple_gla
        from fla.ops.gla import chunk_gla
        return {"retention": chunk_retention, "simple_gla": chunk_simple_gla, "gla": chunk_gla}
    except Exception as e:  # noqa: BLE001  (not installed, or its Triton refuses)
        print(f"(flash-linear-attention not timed: {type(e).__name__}: {e})")
        return {}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqlens", default="4k,8k,16k")
    ap.add_argument("--fla-path", default="")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--methods", default="retention,simple_gla,gla,mamba2",
                    help="a subset of the definitions, comma-separated")
    ap.add_argument("--profile", action="store_true",
                    help="after each of ours, the kernels of 3 forwards and 3 forward + backwards")
    ap.add_argument("--no-fla", action="store_true", help="ours only")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    cuda = not args.dry_run and torch.cuda.is_available()
    dev, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    seqlens = [128] if not cuda else [int(s[:-1]) * 1024 if s.endswith("k") else int(s)
                                      for s in args.seqlens.split(",")]
    heads, dim, tokens = (H, D, TOKENS) if cuda else (2, 32, 256)
    fla = _fla(args.fla_path) if cuda and not args.no_fla else {}
    causal = ae.compile(mask_mod=ae.mods.causal)
    defs = {"retention": ae.linear.retention(heads), "simple_gla": ae.linear.simple_gla(),
            "gla": ae.linear.gla(), "mamba2": ae.linear.mamba2(torch.zeros(heads, device=dev))}
    unknown = set(args.methods.split(",")) - set(defs)
    if unknown:
        ap.error(f"--methods: no definition {sorted(unknown)}; there are {', '.join(defs)}")
    defs = {name: defs[name] for name in args.methods.split(",")}
    t_start = time.perf_counter()

    def progress(what: str) -> None:  # (stderr: which phase a step's time limit cut short)
        print(f"[{time.perf_counter() - t_start:6.1f} s] {what}", file=sys.stderr, flush=True)
    print("| method | T | ours fwd | ours fwd+bwd | FLA fwd | FLA fwd+bwd | x FLA fwd | x FLA fwd+bwd "
          "| softmax causal fwd+bwd |")
    print("|---|---|---|---|---|---|---|---|---|")
    for T in seqlens:
        B = max(1, tokens // T)
        gen = torch.Generator(device=dev).manual_seed(0)
        mk = lambda *s: (torch.randn(*s, device=dev, generator=gen) * 0.5).to(dtype)
        q, k, v = mk(B, heads, T, dim), mk(B, heads, T, dim), mk(B, heads, T, dim)
        g = {"retention": None,
             "simple_gla": torch.nn.functional.logsigmoid(torch.randn(B, heads, T, device=dev, generator=gen)),
             # GLA's per-channel gates as FLA's examples make them (logsigmoid / 16)
             "gla": torch.nn.functional.logsigmoid(torch.randn(B, heads, T, dim, device=dev, generator=gen)) / 16,
             "mamba2": torch.nn.functional.softplus(torch.randn(B, heads, T, device=dev, generator=gen))}
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]
        dout = mk(B, heads, T, dim)  # the output's gradient, as a training step receives it
        sm_fb = timed(lambda: fwd_bwd(causal(*leaves), leaves, dout), args.reps)
        for name, lin in defs.items():
            progress(f"T {T} {name}: ours (its kernels compile on first use)")
            with torch.no_grad():
                fwd = timed(lambda: lin(q, k, v, g[name]), args.reps)
            fb = timed(lambda: fwd_bwd(lin(*leaves, g[name]), leaves, dout), args.reps)
            if args.profile and cuda:
                print(f"T {T} {name} forward, ", end="")
                profile_calls(lambda: lin(q, k, v, g[name]), rows=12, cpu=True)
                with torch.no_grad():
                    python_profile(lambda: lin(q, k, v, g[name]))
                print(f"T {T} {name} forward + backward, ", end="")
                profile_calls(lambda: fwd_bwd(lin(*leaves, g[name]), leaves, dout), grad=True, rows=16)
            f_fwd = f_fb = float("nan")
            if name in fla:
                progress(f"T {T} {name}: FLA (its Triton kernels autotune on first use)")
                qt, kt, vt = (t.transpose(1, 2).contiguous() for t in (q, k, v))
                extra = {} if g[name] is None else {"g": g[name].transpose(1, 2).contiguous()}
                with torch.no_grad():
                    f_fwd = timed(lambda: fla[name](qt, kt, vt, **extra), args.reps)
                try:
                    ft = [t.detach().requires_grad_() for t in (qt, kt, vt)]
                    dout_t = dout.transpose(1, 2).contiguous()
                    f_fb = timed(lambda: fwd_bwd(fla[name](*ft, **extra)[0], ft, dout_t), args.reps)
                except Exception as e:  # noqa: BLE001  (simple GLA's backward on Hopper: triton < 3.7.1)
                    print(f"(FLA {name} backward: {type(e).__name__})")
            print(f"| {name} | {T} | {fwd * 1e3:.3f} | {fb * 1e3:.3f} | {f_fwd * 1e3:.3f} | "
                  f"{f_fb * 1e3:.3f} | {f_fwd / fwd:.2f} | {f_fb / fb:.2f} | {sm_fb * 1e3:.3f} |")
    # The decode step: the state read and written once.
    Bd, Hd = (64, 32) if cuda else (2, 2)
    lin = defs["retention"] if Hd == heads and "retention" in defs else ae.linear.retention(Hd)
    state = torch.zeros(Bd, Hd, dim, dim, device=dev)
    qd, kd, vd = (torch.randn(Bd, Hd, 1, dim, device=dev).to(dtype) for _ in range(3))
    with torch.no_grad():
        step = lambda: lin.step(qd, kd, vd, state=state)
        t = timed(step, max(args.reps, 50))
        # replayed from a CUDA graph: the kernel without the call's host work
        tg = timed(graphed(step), max(args.reps, 50)) if cuda else float("nan")
    gbs, gbs_g = (2 * state.numel() * 4 / x / 1e9 for x in (t, tg))
    print(f"\n| decode step | B {Bd} H {Hd} D {dim} | {t * 1e6:.1f} us | {gbs:.0f} GB/s of the state "
          f"| graph {tg * 1e6:.1f} us | {gbs_g:.0f} GB/s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
