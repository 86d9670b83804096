"""The sm80 (mma.sync) forward under several AE_SM80_FWD tile configurations, in one process
with SDPA flash as the yardstick: plain and causal softmax, bf16, B = 16384 / S, H = 2048 / D.
Hopper runs the sm80 forward here (AE_DISABLE_SM90=1). For picking the tile table's entries
at head dims other than 128 (bench/tile_sweep.py does D128 with the backward too).

    python bench/fwd80_tile_sweep.py [--dim 64] [--configs 4,2,64 4,2,96 ...]
"""
import argparse
import os

import torch
import torch.nn.functional as F
import triton.testing as tt
from torch.nn.attention import SDPBackend, sdpa_kernel

import attention_engine as ae
from attention_engine import mods

ap = argparse.ArgumentParser()
ap.add_argument("--dim", type=int, default=64)
ap.add_argument("--seqs", default="4096,16384")
ap.add_argument("--configs", nargs="+",
                default=["4,2,64,0", "4,2,64,-1", "8,1,64", "4,1,64", "8,2,64", "8,1,128", "4,2,96"])
args = ap.parse_args()
os.environ["AE_DISABLE_SM90"] = "1"  # read per call by the planner, like AE_SM80_FWD
D = args.dim


def ms(fn):
    return tt.do_bench(fn, warmup=30, rep=200, return_mode="median")


for S in map(int, args.seqs.split(",")):
    B, H = max(1, 16384 // S), 2048 // D
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    for causal in (False, True):
        flops = 4 * B * H * S * S * D * (0.5 if causal else 1.0)
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            row = [f"S{S} {'causal' if causal else 'plain'}",
                   f"flash {flops / ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)) / 1e9:.0f}"]
        for cfg in args.configs:
            os.environ["AE_SM80_FWD"] = cfg
            attn = ae.compile(mask_mod=mods.causal) if causal else ae.compile()
            row.append(f"{cfg}: {flops / ms(lambda: attn(q, k, v)) / 1e9:.0f}")
        os.environ.pop("AE_SM80_FWD")
        print(" | ".join(row), flush=True)
