"""Times the sm80 kernels under several tile configurations (AE_SM80_FWD / AE_SM80_BWD, one
subprocess each), plain softmax, bf16, B=1 H=16 S=16k D=128, to pick the tile table's entries.

    python bench/tile_sweep.py [fwd:4,2,32 bwd:8 ...]   (default: the list below)
"""
import os
import subprocess
import sys

CHILD = r'''
import torch, triton.testing as tt, attention_engine as ae
from attention_engine import mods
B, H, S, D = 1, 16, 16384, 128
torch.manual_seed(0)
q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
do = torch.randn_like(q)
for name, attn, frac in (("plain", ae.compile(), 1.0), ("causal", ae.compile(mask_mod=mods.causal), 0.5)):
    flops = 4 * B * H * S * S * D * frac
    f = tt.do_bench(lambda: attn(q, k, v), warmup=50, rep=300, return_mode="median")
    fb = tt.do_bench(lambda: torch.autograd.grad(attn(q, k, v), (q, k, v), do), warmup=50, rep=300, return_mode="median")
    print(f"{name} fwd {flops / f / 1e9:.0f} fwd+bwd {3.5 * flops / fb / 1e9:.0f}", flush=True)
'''

CONFIGS = [("fwd", "4,2,32"), ("fwd", "8,2,32"), ("fwd", "8,1,64"), ("fwd", "4,1,64"),
           ("bwd", "8"), ("bwd", "4")]


def main():
    configs = [tuple(a.split(":", 1)) for a in sys.argv[1:]] or CONFIGS
    for kind, cfg in configs:
        env = dict(os.environ)
        env["AE_SM80_FWD" if kind == "fwd" else "AE_SM80_BWD"] = cfg
        r = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                           timeout=240)
        lines = r.stdout.strip().splitlines() or [r.stderr.strip()[-300:]]
        for line in lines:
            print(f"{kind} {cfg:8} {line}", flush=True)


if __name__ == "__main__":
    main()
