"""The persistent sm90 forward (common/tile_scheduler.h PersistentTiles, AE_PERSISTENT=on: a
CTA per SM; also "1") against one CTA per tile (the default), same process, alternating
A / B twice so that clock drift lands in both; SDPA cuDNN in the same run for scale. bf16,
16k tokens, hidden 2048 (H = 2048 / D), forward TFLOPS by the FLOPs the mask keeps (the
document mask: random documents of about 1k tokens, causal within each, as attention_bench).

    python bench/persistent_ab.py [--seqs 4096,16384] [--cases causal,document]
"""
import argparse
import math
import os

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import attention_engine as ae
from attention_engine import mods
from attention_bench import doc_lengths
from baselines import timed_ms

ap = argparse.ArgumentParser()
ap.add_argument("--seqs", default="4096,16384")
ap.add_argument("--cases", default="", help="comma-separated names (default: all)")
args = ap.parse_args()


def cases(S):
    """(name, D, attention_engine callable or None, SDPA's is_causal or None, kept)."""
    lengths = doc_lengths(S)
    ids = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    doc = mods.document_mask(ids.to(torch.int32).cuda())
    doc_kept = sum(n * (n + 1) / 2 for n in lengths) / (S * S)
    for D in (64, 128, 256):
        yield "plain", D, ae.compile(), False, 1.0
        yield "causal", D, ae.compile(mask_mod=mods.causal), True, 0.5
    H = 2048 // 128
    yield "alibi+causal", 128, ae.compile(mods.alibi(mods.alibi_slopes(H, device="cuda")),
                                          mods.causal), None, 0.5
    yield "softcap", 128, ae.compile(mods.softcap(50.0)), None, 1.0
    yield "sigmoid none", 128, ae.compile(mods.sigmoid(-math.log(S)), mods.causal,
                                          normalize="none"), None, 0.5
    yield "document", 128, ae.compile(mask_mod=doc), None, doc_kept


print(f"{torch.cuda.get_device_name()}, bf16, 16k tokens, forward TFLOPS: persistent "
      "(AE_PERSISTENT=on) / a CTA per tile (default), two alternating rounds; SDPA cuDNN for scale")
print(f"{'case':14} {'D':>4} {'S':>6} {'pers':>6} {'grid':>6} {'pers':>6} {'grid':>6}  "
      f"{'gain':>6}  {'cudnn':>6}")
for S in (int(s) for s in args.seqs.split(",")):
    for name, D, fn, causal, kept in cases(S):
        if args.cases and name not in args.cases.split(","):
            continue
        H, B = 2048 // D, max(1, 16384 // S)
        torch.manual_seed(0)
        q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        flops = 4 * B * H * S * S * D * kept
        assert fn.backend_for(q, k, v) == "sm90", fn.backend_for(q, k, v)
        row = []
        for _ in range(2):
            for setting in ("1", "0"):
                os.environ["AE_PERSISTENT"] = setting
                row.append(flops / timed_ms(fn, q, k, v, None, False) / 1e9)
        os.environ.pop("AE_PERSISTENT", None)
        cudnn = ""
        if causal is not None:
            with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
                ms = timed_ms(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=causal),
                              q, k, v, None, False)
            cudnn = f"{flops / ms / 1e9:6.0f}"
        gain = (row[0] + row[2]) / (row[1] + row[3])
        print(f"{name:14} {D:4d} {S:6d} {row[0]:6.0f} {row[1]:6.0f} {row[2]:6.0f} {row[3]:6.0f}  "
              f"{gain:6.3f}  {cudnn:>6}", flush=True)
