"""TFLOPS of attention_engine alone on variants at S=4k (B=4, H=16, D=128, bf16; --seq), including a
learnable relative bias whose table gets a gradient: forward with the sm90 template, with the
sm80 one (AE_DISABLE_SM90=1), and forward+backward (sm80 backward), as "fwd90/fwd80/fwd+bwd".
A quick check of the templates on masked and captured-tensor variants (attention_bench.py
has the baselines).

    python bench/variant_fwd_bwd.py [--seq 16384]   (B = 16384 / seq)
"""
import argparse
import os
import torch, triton.testing as tt, attention_engine as ae
from attention_engine import mods
ap = argparse.ArgumentParser()
ap.add_argument("--seq", type=int, default=4096)
S = ap.parse_args().seq
B, H, D = max(1, 16384 // S), 16, 128
torch.manual_seed(0)
q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
do = torch.randn_like(q)
rel = torch.randn(H, 2 * 256 + 1, device="cuda", requires_grad=True)
cases = [("plain", ae.compile(), 1.0), ("causal", ae.compile(mask_mod=mods.causal), 0.5),
         ("alibi", ae.compile(mods.alibi(mods.alibi_slopes(H, device="cuda")), mods.causal), 0.5),
         ("softcap", ae.compile(mods.softcap(30.0), mods.causal), 0.5),
         ("relbias", ae.compile(mods.relative_bias(rel, 256), mods.causal), 0.5)]
out = []
for name, attn, frac in cases:
    flops = 4 * B * H * S * S * D * frac
    fwd = []
    for sm80 in ("0", "1"):  # read per call (cuda_backend's plan)
        os.environ["AE_DISABLE_SM90"] = sm80
        with torch.no_grad():
            fwd.append(tt.do_bench(lambda: attn(q, k, v), warmup=30, rep=200, return_mode="median"))
    os.environ["AE_DISABLE_SM90"] = "0"
    fb = tt.do_bench(lambda: torch.autograd.grad(attn(q, k, v), (q, k, v), do), warmup=30, rep=200, return_mode="median")
    out.append(f"{name} {flops / fwd[0] / 1e9:.0f}/{flops / fwd[1] / 1e9:.0f}/{3.5 * flops / fb / 1e9:.0f}")
print(" | ".join(out), flush=True)
