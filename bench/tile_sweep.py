"""Times the kernels under several tile configurations (AE_SM80_FWD / AE_SM80_BWD /
AE_SM90_FWD, one subprocess each), bf16, 16k tokens, hidden 2048, to pick the tile tables'
entries. sm80 configs time plain and causal softmax at D128, forward and forward+backward
(fwd: configs with the sm90 forward disabled);
fwd90 configs ("block_n,stages,overlap,pingpong") time the sm90 forward on several variants
and head dims.

    python bench/tile_sweep.py [fwd:4,2,32 bwd:128,2 fwd90:128,2,1,1 ...]   (default: the list below)
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

CHILD90 = r'''
import torch, triton.testing as tt, attention_engine as ae
from attention_engine import mods
S = 16384
cases = [("plain", 128, lambda h: ae.compile(), 1.0), ("causal", 128, lambda h: ae.compile(mask_mod=mods.causal), 0.5),
         ("softcap", 128, lambda h: ae.compile(mods.softcap(30.0)), 1.0),
         ("alibi+causal", 128, lambda h: ae.compile(mods.alibi(mods.alibi_slopes(h, device="cuda")), mods.causal), 0.5),
         ("sigmoid", 128, lambda h: ae.compile(mods.sigmoid(-4.0), normalize="none"), 1.0),
         ("plain", 64, lambda h: ae.compile(), 1.0), ("plain", 256, lambda h: ae.compile(), 1.0)]
out = []
for name, d, make, frac in cases:
    h = 2048 // d
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, h, S, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    attn = make(h)
    assert attn.backend_for(q, k, v) == "sm90", attn.backend_for(q, k, v)
    f = tt.do_bench(lambda: attn(q, k, v), warmup=30, rep=200, return_mode="median")
    out.append(f"{name} d{d} {4 * h * S * S * d * frac / f / 1e9:.0f}")
print(" | ".join(out), flush=True)
'''

CONFIGS = [("fwd", "4,2,32"), ("fwd", "8,2,32"), ("fwd", "8,1,64"), ("fwd", "4,1,64"),
           ("bwd", "128,2"), ("bwd", "128,1"), ("bwd", "64,2")]


def main():
    configs = [tuple(a.split(":", 1)) for a in sys.argv[1:]] or CONFIGS
    for kind, cfg in configs:
        env = dict(os.environ)
        env[{"fwd": "AE_SM80_FWD", "bwd": "AE_SM80_BWD", "fwd90": "AE_SM90_FWD"}[kind]] = cfg
        if kind == "fwd":  # the sm80 forward itself, not the sm90 one a Hopper GPU would pick
            env["AE_DISABLE_SM90"] = "1"
        r = subprocess.run([sys.executable, "-c", CHILD90 if kind == "fwd90" else CHILD], env=env,
                           capture_output=True, text=True, timeout=240)
        lines = r.stdout.strip().splitlines() or [r.stderr.strip()[-300:]]
        for line in lines:
            print(f"{kind} {cfg:8} {line}", flush=True)


if __name__ == "__main__":
    main()
