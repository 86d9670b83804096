"""Quick GPU check of the fused kernels against the reference executor: forward, LSE and
gradients for a few variants and shapes, printing errors next to PyTorch's own bf16 error
(FlashAttention's rule: kernel error <= 2x (3x for gradients) the low-precision error).

    PYTHONPATH=python python bench/kernel_smoke.py
"""
import math
import sys
import time

import torch

import attention_engine as ae
from attention_engine import mods


def pt_lowprec(attn_ref, q, k, v):
    """The same math in plain PyTorch at the inputs' precision (the error yardstick)."""
    return attn_ref(q, k, v)


def check(name, attn, B, HQ, HKV, SQ, SKV, DQK, DV, dtype=torch.bfloat16, grads_of=()):
    torch.manual_seed(0)
    dev = "cuda"
    q = torch.randn(B, HQ, SQ, DQK, device=dev, dtype=dtype, requires_grad=True)
    k = torch.randn(B, HKV, SKV, DQK, device=dev, dtype=dtype, requires_grad=True)
    v = torch.randn(B, HKV, SKV, DV, device=dev, dtype=dtype, requires_grad=True)
    dout = torch.randn(B, HQ, SQ, DV, device=dev, dtype=dtype)
    backend = attn.backend_for(q, k, v)
    t0 = time.perf_counter()
    softmax = attn.normalize == "softmax"
    out, lse = attn(q, k, v, return_lse=True) if softmax else (attn(q, k, v), None)
    grads = torch.autograd.grad(out, (q, k, v) + tuple(grads_of), dout)
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    ref, ref_lse = (attn.reference(q32, k32, v32, return_lse=True) if softmax
                    else (attn.reference(q32, k32, v32), None))
    ref_grads = torch.autograd.grad(ref, (q32, k32, v32) + tuple(grads_of), dout.float())
    # low-precision yardstick: the reference run on bf16 inputs rounds only the inputs, so use
    # the fp32 result rounded to the dtype as the "same math in low precision" floor.
    pt_err = (ref.to(dtype).float() - ref).abs().max().item()
    err = (out.float() - ref).abs().max().item()
    lse_err, lse_inf_ok = 0.0, True
    if softmax:
        fin = torch.isfinite(ref_lse)
        lse_err = (lse[fin] - ref_lse[fin]).abs().max().item() if fin.any() else 0.0
        lse_inf_ok = torch.equal(torch.isneginf(lse), torch.isneginf(ref_lse))
    gerrs = []
    for g, rg in zip(grads, ref_grads):
        scale = rg.abs().max().item() or 1.0
        gerrs.append((g.float() - rg).abs().max().item() / scale)
    nan = any(torch.isnan(t).any().item() for t in (out, *grads))
    ok = (not nan and err <= 2 * pt_err + 1e-3 and lse_err < 1e-2 and lse_inf_ok
          and max(gerrs) < 2e-2)
    print(f"{name:22} {backend:6} S={SQ}/{SKV} D={DQK}/{DV} H={HQ}/{HKV} "
          f"out {err:.2e} (pt {pt_err:.2e}) lse {lse_err:.1e} grads(rel) "
          + " ".join(f"{e:.1e}" for e in gerrs) + f" first {first:.2f}s "
          + ("ok" if ok else "FAIL"))
    return ok


def main():
    if not torch.cuda.is_available():
        print("no GPU")
        return 2
    table = torch.randn(8, 2 * 16 + 1, device="cuda", requires_grad=True)
    slopes = mods.alibi_slopes(8, device="cuda")
    doc = (torch.arange(300, device="cuda") // 70)
    cases = [
        ("plain", ae.compile(), dict(B=2, HQ=8, HKV=8, SQ=256, SKV=256, DQK=128, DV=128)),
        ("plain tails", ae.compile(), dict(B=1, HQ=4, HKV=4, SQ=113, SKV=203, DQK=64, DV=64)),
        ("causal", ae.compile(mask_mod=mods.causal), dict(B=2, HQ=8, HKV=2, SQ=300, SKV=300, DQK=128, DV=128)),
        ("alibi+causal", ae.compile(mods.alibi(slopes), mods.causal), dict(B=1, HQ=8, HKV=8, SQ=200, SKV=200, DQK=128, DV=128)),
        ("softcap", ae.compile(mods.softcap(5.0)), dict(B=1, HQ=8, HKV=8, SQ=130, SKV=130, DQK=96, DV=96)),
        ("sliding", ae.compile(mask_mod=mods.sliding_window(64)), dict(B=1, HQ=4, HKV=4, SQ=500, SKV=500, DQK=128, DV=128)),
        ("document", ae.compile(mask_mod=mods.document_mask(doc)), dict(B=1, HQ=4, HKV=4, SQ=300, SKV=300, DQK=64, DV=64)),
        ("sigmoid none", ae.compile(mods.sigmoid(-3.0), normalize="none"), dict(B=1, HQ=4, HKV=4, SQ=128, SKV=128, DQK=128, DV=128)),
        ("d256", ae.compile(mask_mod=mods.causal), dict(B=1, HQ=4, HKV=4, SQ=200, SKV=200, DQK=256, DV=256)),
        ("d192/128", ae.compile(), dict(B=1, HQ=4, HKV=4, SQ=150, SKV=150, DQK=192, DV=128)),
        ("fp16", ae.compile(mask_mod=mods.causal), dict(B=1, HQ=4, HKV=4, SQ=150, SKV=150, DQK=128, DV=128, dtype=torch.float16)),
        ("masked rows", ae.compile(mask_mod=lambda b, h, q, k: (q >= 40) & (k <= q)), dict(B=1, HQ=2, HKV=2, SQ=128, SKV=128, DQK=64, DV=64)),
    ]
    ok = True
    for name, attn, shape in cases:
        try:
            ok &= check(name, attn, **shape)
        except Exception as e:  # noqa: BLE001
            ok = False
            print(f"{name:22} ERROR {type(e).__name__}: {str(e)[:600]}")
    try:
        ok &= check("relative bias (grad)", ae.compile(mods.relative_bias(table, 16)),
                    B=1, HQ=8, HKV=8, SQ=160, SKV=160, DQK=64, DV=64, grads_of=(table,))
    except Exception as e:  # noqa: BLE001
        ok = False
        print(f"relative bias ERROR {type(e).__name__}: {str(e)[:600]}")
    print("smoke:", "all ok" if ok else "FAILURES")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
