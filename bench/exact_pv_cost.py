"""What the forwards' check of V at masked keys costs (templates/nvidia/exact_pv.h): forward
TFLOPS with the check (default) and without it (AE_EXACT_PV=0, which compiles it out), same
process, alternating A/B/A/B so that clocks drift into both; and the cost of a tile that does
take the exact path (every masked block's V holds a nan). bf16, B 1, H 16, D 128, 16k tokens.

    python bench/exact_pv_cost.py [--seq 16384] [--family sm90|sm80]
"""
import argparse
import os

import torch

import attention_engine as ae
from attention_engine import mods
from baselines import timed_ms

ap = argparse.ArgumentParser()
ap.add_argument("--seq", type=int, default=16384)
ap.add_argument("--family", default="sm90", choices=["sm90", "sm80"])
args = ap.parse_args()
if args.family == "sm80":
    os.environ["AE_DISABLE_SM90"] = "1"
S, H, D = args.seq, 16, 128
torch.manual_seed(0)
q, k, v = (torch.randn(1, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
doc_ids = torch.repeat_interleave(torch.arange(16, device="cuda"), S // 16)
cases = [
    ("plain", ae.compile(), 1.0),
    ("causal", ae.compile(mask_mod=mods.causal), 0.5),
    ("alibi + causal", ae.compile(mods.alibi(mods.alibi_slopes(H, device="cuda")), mods.causal), 0.5),
    ("softcap", ae.compile(mods.softcap(30.0)), 1.0),
    ("document (16 docs)", ae.compile(mask_mod=mods.document_mask(doc_ids)), 1 / 16),
]


def tflops(fn, vv, kept):
    ms = timed_ms(fn, q, k, vv, None, False)
    return 4 * H * S * S * D * kept / ms / 1e9


print(f"H200 bf16 B1 H{H} S{S} D{D}, {args.family} forward TFLOPS: with the V check (default) / "
      "without (AE_EXACT_PV=0), two alternating rounds; last column: V holds nan at masked keys")
print(f"{'case':22} {'check':>7} {'none':>7} {'check':>7} {'none':>7}  {'nan V':>7}")
for name, fn, kept in cases:
    assert fn.backend_for(q, k, v) == args.family, fn.backend_for(q, k, v)
    row = []
    for _ in range(2):
        for trust in ("", "0"):
            os.environ["AE_EXACT_PV"] = trust or "1"
            row.append(tflops(fn, v, kept))
    os.environ["AE_EXACT_PV"] = "1"
    # nan every 97 keys: every block with masked keys (the diagonal's, the documents' edges,
    # the key tail) takes the exact path
    bad = v.clone()
    bad[:, :, 1::97] = float("nan")
    nan_case = tflops(fn, bad, kept)
    print(f"{name:22} {row[0]:7.0f} {row[1]:7.0f} {row[2]:7.0f} {row[3]:7.0f}  {nan_case:7.0f}",
          flush=True)
