"""The backward on Hopper: attention_engine's sm90 backward next to its sm80 one
(AE_DISABLE_SM90_BWD=1), its deterministic mode (torch.use_deterministic_algorithms: "det",
fwd+bwd TFLOPS and the ratio to the default), SDPA (cuDNN, flash) and, where it imports,
FlashAttention-4 (`flash_attn.cute`, brought by bench/fa4_pack.sh) in the same run. bf16, 16k tokens (B = 16384 /
S), hidden 2048 (H = 2048 / Dqk); TFLOPS of fwd+bwd = 3.5 x 2 B H S^2 (Dqk + Dv) x the kept fraction, and of
the backward alone (2.5 x). Before timing, the two backwards' gradients are compared (max
|difference| over max |value|, per tensor).

    python bench/bwd_compare.py [--quick] [--ab AE_SM90_BWD=0]

--ab NAME=VALUE also times the default backward with that environment variable set (a tuning
override, csrc/plan/overrides.h), for an A/B in one run: "ab" TFLOPS and its ratio to the
default's.
"""
import argparse
import os
import re

import torch
import torch.nn.functional as F
import triton.testing as tt
from torch.nn.attention import SDPBackend, sdpa_kernel

import attention_engine as ae
from attention_engine import mods

from fa4 import fa4, why as fa4_why  # bench/fa4.py: FlashAttention-4 where it imports

if fa4 is None:
    print(f"FlashAttention-4 not measured: {fa4_why}", flush=True)

ap = argparse.ArgumentParser()
ap.add_argument("--quick", action="store_true", help="D128 plain and causal at 8k only")
ap.add_argument("--ab", default="", help="NAME=VALUE: also time with this variable set")
ap.add_argument("--cases", default="", help="regex on 'name D<d> S<s>k': only the cases it finds")
ap.add_argument("--lean", action="store_true", help="time the sm90 backward only (quick A/Bs)")
ap.add_argument("--skip", default="", help="comma-separated: sm80, det (fewer kernels to compile)")
args = ap.parse_args()
SKIP = set(filter(None, args.skip.split(",")))
if SKIP - {"sm80", "det"}:
    ap.error(f"--skip takes sm80 and det, got {sorted(SKIP - {'sm80', 'det'})}")


def bench(fn):
    return tt.do_bench(fn, warmup=20, rep=150, return_mode="median")


def inputs(S, D, Dv=None, dtype=torch.bfloat16):
    B, H = max(1, 16384 // S), 2048 // D
    g = torch.Generator(device="cuda").manual_seed(0)
    mk = lambda d: torch.randn(B, H, S, d, device="cuda", dtype=dtype, generator=g).requires_grad_()
    q, k, v = mk(D), mk(D), mk(Dv or D)
    return q, k, v, torch.randn(B, H, S, Dv or D, device="cuda", dtype=dtype, generator=g)


def grads(fn, q, k, v, do):
    return torch.autograd.grad(fn(q, k, v), (q, k, v), do)


def rel_diff(a, b):
    """max |a - b| / max |b| over the gradients, or which of them has non-finite values."""
    bad = [f"{w}{n}" for w, g in (("sm90:", a), ("sm80:", b))
           for n, x in zip("qkv", g) if not torch.isfinite(x).all()]
    if bad:
        return "non-finite d" + ",d".join(bad)
    d = max(((x.float() - y.float()).abs().max() / y.float().abs().max().clamp(min=1e-6)).item()
            for x, y in zip(a, b))
    return f"{d:.1e}"


def doc_ids(S, n_docs=16, seed=0):
    """Random document lengths (at least 64 tokens each), and the causal kept fraction."""
    g = torch.Generator().manual_seed(seed)
    cuts = torch.sort(torch.randperm(S // 64 - 1, generator=g)[: n_docs - 1] + 1).values * 64
    lengths = torch.diff(torch.cat([torch.tensor([0]), cuts, torch.tensor([S])]))
    ids = torch.repeat_interleave(torch.arange(n_docs), lengths).cuda()
    return ids, float((lengths * (lengths + 1) / 2).sum()) / S**2


def case_list():
    cases = [("plain", 128, 8192, lambda H: ae.compile(), 1.0, False),
             ("causal", 128, 8192, lambda H: ae.compile(mask_mod=mods.causal), 0.5, True)]
    if args.quick:
        return cases
    cases += [("plain", 128, 4096, lambda H: ae.compile(), 1.0, False),
              ("causal", 128, 16384, lambda H: ae.compile(mask_mod=mods.causal), 0.5, True),
              ("plain", 64, 8192, lambda H: ae.compile(), 1.0, False),
              ("causal", 64, 8192, lambda H: ae.compile(mask_mod=mods.causal), 0.5, True),
              ("alibi+causal", 128, 8192,
               lambda H: ae.compile(mods.alibi(mods.alibi_slopes(H, device="cuda")), mods.causal), 0.5, None),
              ("softcap+causal", 128, 8192, lambda H: ae.compile(mods.softcap(30.0), mods.causal), 0.5, None),
              ("sigmoid none", 128, 8192, lambda H: ae.compile(mods.sigmoid(-4.0), normalize="none"), 1.0, None)]
    # MLA prefill's head dims (Dqk 192, Dv 128; the sm90 backward in two score parts)
    cases += [("plain", 192, 8192, lambda H: ae.compile(), 1.0, False, 128),
              ("causal", 192, 8192, lambda H: ae.compile(mask_mod=mods.causal), 0.5, True, 128)]
    # Head dims 96 and 80: the sm90 kernels of 128, padded (csrc/plan/tile_tables.h sm90_padded)
    cases += [("plain", 96, 8192, lambda H: ae.compile(), 1.0, False),
              ("causal", 96, 8192, lambda H: ae.compile(mask_mod=mods.causal), 0.5, True),
              ("plain", 80, 8192, lambda H: ae.compile(), 1.0, False)]
    # Head dim 256 (the wide sm90 backward: 64 keys per CTA, dK's and dV's columns split)
    cases += [("plain", 256, 8192, lambda H: ae.compile(), 1.0, False),
              ("causal", 256, 8192, lambda H: ae.compile(mask_mod=mods.causal), 0.5, True)]
    # Pairs without a kernel of their own, on the smallest one above them (sm90_padded):
    # 192 / 192 and 256 / 64 on the wide kernels' 256 / 256 and 256 / 128, 64 / 256 on 128 / 256
    cases += [("plain", 144, 8192, lambda H: ae.compile(), 1.0, False, 144),  # the least real work: 56%
              ("plain", 80, 8192, lambda H: ae.compile(), 1.0, False, 144),
              ("plain", 192, 8192, lambda H: ae.compile(), 1.0, False, 192),
              ("causal", 192, 8192, lambda H: ae.compile(mask_mod=mods.causal), 0.5, True, 192),
              ("plain", 64, 8192, lambda H: ae.compile(), 1.0, False, 256),
              ("plain", 256, 8192, lambda H: ae.compile(), 1.0, False, 64)]
    ids, frac = doc_ids(16384)
    cases.append(("document", 128, 16384, lambda H: ae.compile(mask_mod=mods.document_mask(ids)), frac, None))
    return cases


rows = []
for name, D, S, make, frac, causal, *dv in case_list():
    Dv = dv[0] if dv else D
    dims = f"D{D}" if Dv == D else f"D{D}/{Dv}"
    if args.cases and not re.search(args.cases, f"{name} {dims} S{S // 1024}k"):
        continue
    q, k, v, do = inputs(S, D, Dv)
    B, H = q.shape[:2]
    attn = make(H)
    flops = 2 * B * H * S * S * (D + Dv) * frac  # the forward's two GEMMs
    fwd_bwd = lambda: grads(attn, q, k, v, do)
    os.environ["AE_DISABLE_SM90_BWD"] = "0"
    g90 = fwd_bwd()
    t90 = bench(fwd_bwd)
    if args.lean:
        with torch.no_grad():
            tf = bench(lambda: attn(q, k, v))
        print(f"{name:15s} {dims} S{S // 1024}k  sm90 bwd {3.5 * flops / t90 / 1e9:4.0f} "
              f"(bwd {2.5 * flops / (t90 - tf) / 1e9:4.0f})", flush=True)
        continue
    skip = SKIP
    t80 = tdet = float("nan")
    g80 = g90
    if "sm80" not in skip:
        os.environ["AE_DISABLE_SM90_BWD"] = "1"
        g80 = fwd_bwd()
        t80 = bench(fwd_bwd)
        os.environ["AE_DISABLE_SM90_BWD"] = "0"
    if "det" not in skip:
        torch.use_deterministic_algorithms(True)
        try:
            tdet = bench(fwd_bwd)
        finally:
            torch.use_deterministic_algorithms(False)
    ab = ""
    if args.ab:
        var, val = args.ab.split("=", 1)
        os.environ[var] = val
        try:
            g_ab = fwd_bwd()
            tab = bench(fwd_bwd)
        finally:
            del os.environ[var]
        ab = f"  ab {3.5 * flops / tab / 1e9:4.0f} ({t90 / tab:.2f}x, diff {rel_diff(g_ab, g90)})"
    with torch.no_grad():
        tf = bench(lambda: attn(q, k, v))
    sm80 = ("sm80 bwd    - (bwd    -)" if "sm80" in skip else
            f"sm80 bwd {3.5 * flops / t80 / 1e9:4.0f} (bwd {2.5 * flops / (t80 - tf) / 1e9:4.0f})")
    det = "det    - (-)" if "det" in skip else f"det {3.5 * flops / tdet / 1e9:4.0f} ({t90 / tdet:.2f}x)"
    line = (f"{name:15s} {dims} S{S // 1024}k  sm90 bwd {3.5 * flops / t90 / 1e9:4.0f} "
            f"(bwd {2.5 * flops / (t90 - tf) / 1e9:4.0f})  {sm80}  {det}  "
            f"diff {rel_diff(g90, g80) if 'sm80' not in skip else '-'}{ab}")
    if causal is not None:
        for label, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
            with sdpa_kernel(backend):
                fn = lambda: grads(lambda a, b_, c: F.scaled_dot_product_attention(a, b_, c, is_causal=causal), q, k, v, do)
                try:
                    line += f"  {label} {3.5 * flops / bench(fn) / 1e9:4.0f}"
                except RuntimeError as e:  # noqa: PERF203
                    line += f"  {label} n/a ({str(e)[:40]})"
        if fa4 is not None:  # [B, S, H, D]
            q4, k4, v4, do4 = (x.detach().transpose(1, 2).contiguous().requires_grad_(x is not do)
                               for x in (q, k, v, do))
            try:
                t4 = bench(lambda: torch.autograd.grad(fa4(q4, k4, v4, causal=bool(causal)),
                                                       (q4, k4, v4), do4))
                line += f"  fa4 {3.5 * flops / t4 / 1e9:4.0f}"
            except Exception as e:  # noqa: BLE001
                line += f"  fa4 n/a ({type(e).__name__}: {str(e)[:40]})"
            del q4, k4, v4, do4
    print(line, flush=True)
    rows.append(line)
    del q, k, v, do
    torch.cuda.empty_cache()

print("\nfwd+bwd TFLOPS (bwd alone in parentheses), " + torch.cuda.get_device_name())
print("\n".join(rows))
