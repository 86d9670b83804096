"""The sm90 forward's tiles by sequence length: forward TFLOPS (by the FLOPs the mask keeps) of
the benchmark's variants at several lengths (16k tokens per batch, hidden 2048, D128, bf16)
under AE_SM90_FWD settings, alternating the settings twice so that clock drift lands in all.
For the tile tables (csrc/plan/tile_tables.cc), whose key-block width does not yet depend on
the length.

    python bench/tile_probe.py [--seqs 4096,8192] [--configs "128,2,0,0;128,3,1,1"]
"""
import argparse
import os

import torch

import attention_engine as ae
from attention_engine import mods
from baselines import timed_ms

ap = argparse.ArgumentParser()
ap.add_argument("--seqs", default="4096,8192")
ap.add_argument("--configs", default="128,2,0,0;128,2,1,1;128,3,1,1",
                help="';'-separated AE_SM90_FWD values; the table's pick is always timed first")
ap.add_argument("--variants", default="plain,causal,alibi,softcap,window")
args = ap.parse_args()

D, H = 128, 16


def variants(seq):
    yield "plain", ae.compile(), 1.0
    yield "causal", ae.compile(mask_mod=mods.causal), 0.5
    yield "alibi", ae.compile(mods.alibi(mods.alibi_slopes(H, device="cuda")), mods.causal), 0.5
    yield "softcap", ae.compile(mods.softcap(30.0)), 1.0
    yield "window", ae.compile(mask_mod=mods.sliding_window(1024)), (1025 * seq - 1024 * 1025 / 2) / seq**2


configs = [""] + [c for c in args.configs.split(";") if c]
wanted = args.variants.split(",")
print(f"{torch.cuda.get_device_name()}, bf16, D{D}, H{H}, 16k tokens: forward TFLOPS, two "
      "alternating rounds per AE_SM90_FWD setting")
print(f"{'case':14} " + "  ".join(f"{c or 'table':>14}" for c in configs))
for seq in map(int, args.seqs.split(",")):
    B = 16384 // seq
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, seq, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    for name, attn, kept in variants(seq):
        if name not in wanted:
            continue
        flops = 4 * B * H * seq * seq * D * kept
        got = {c: [] for c in configs}
        for _ in range(2):
            for c in configs:
                if c:
                    os.environ["AE_SM90_FWD"] = c
                try:
                    ms = timed_ms(attn, q, k, v, None, backward=False)
                finally:
                    os.environ.pop("AE_SM90_FWD", None)
                got[c].append(flops / ms / 1e9 if ms else float("nan"))
        print(f"{name + ' S' + str(seq // 1024) + 'k':14} " + "  ".join(
            f"{', '.join(f'{x:4.0f}' for x in got[c]):>14}" for c in configs), flush=True)
