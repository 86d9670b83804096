"""Where the document mask's forward time goes: forward TFLOPS (by the FLOPs the mask keeps) of
document-mask shapes that differ in one thing each, under environment switches, alternating
the switches twice so that clock drift lands in all. bf16, D128, 16k tokens in one sequence,
16 heads; causal S16k for scale.

    python bench/docmask_probe.py [--envs "AE_MASK_LOADS=2;AE_EXACT_PV=0"] [--cases ...]

Cases:
  random       the benchmark's documents (attention_bench: random lengths, ~1k tokens), causal
  noncausal    the same documents without causality
  equal        16 documents of 1024 tokens (every block boundary on a document boundary), causal
  equal_index  the same mask from the indices alone (q // 1024 == k // 1024): no loads
  window       a causal sliding window of 1024 keys (index-only, its partial blocks on diagonals)
  causal       plain causal attention
"""
import argparse
import os

import torch

import attention_engine as ae
from attention_engine import mods
from attention_bench import doc_lengths
from baselines import timed_ms

ap = argparse.ArgumentParser()
ap.add_argument("--envs", default="AE_MASK_LOADS=2;AE_MASK_LOADS=0;AE_EXACT_PV=0",
                help="';'-separated settings, each 'NAME=VALUE[+NAME=VALUE]'; the default "
                     "(nothing set) is always timed first")
ap.add_argument("--cases", default="random,noncausal,equal,equal_index,window,causal")
ap.add_argument("--seq", type=int, default=16384)
args = ap.parse_args()

S, D, H = args.seq, 128, 16


def kept_of(lengths, causal):
    return sum(n * (n + 1) / 2 if causal else n * n for n in lengths) / (S * S)


def cases():
    lengths = doc_lengths(S)
    ids = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    ids = ids.to(torch.int32).cuda()
    equal = [1024] * (S // 1024)
    eq_ids = (torch.arange(S) // 1024).to(torch.int32).cuda()
    yield "random", mods.document_mask(ids), kept_of(lengths, True)
    yield "noncausal", mods.document_mask(ids, causal=False), kept_of(lengths, False)
    yield "equal", mods.document_mask(eq_ids), kept_of(equal, True)
    yield "equal_index", (lambda b, h, q_idx, kv_idx:
                          (q_idx // 1024 == kv_idx // 1024) & (q_idx >= kv_idx)), kept_of(equal, True)
    yield "window", mods.sliding_window(1024), (1025 * S - 1024 * 1025 / 2) / (S * S)
    yield "causal", mods.causal, 0.5


def with_env(setting: str):
    pairs = [kv.split("=", 1) for kv in setting.split("+") if kv]
    saved = {k: os.environ.get(k) for k, _ in pairs}
    os.environ.update(dict(pairs))
    return saved


def restore(saved):
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


settings = [""] + [e for e in args.envs.split(";") if e]
wanted = args.cases.split(",")
torch.manual_seed(0)
q, k, v = (torch.randn(1, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
print(f"{torch.cuda.get_device_name()}, bf16, D{D}, H{H}, S{S}: forward TFLOPS by the FLOPs kept, "
      "two alternating rounds per setting")
print(f"{'case':12} {'kept':>6}  " + "  ".join(f"{s or 'default':>22}" for s in settings))
for name, mask, kept in cases():
    if name not in wanted:
        continue
    fn = ae.compile(mask_mod=mask)
    flops = 4 * H * S * S * D * kept
    rounds = {s: [] for s in settings}
    for _ in range(2):
        for s in settings:
            saved = with_env(s)
            try:
                ms = timed_ms(fn, q, k, v, None, backward=False)
            finally:
                restore(saved)
            rounds[s].append(flops / ms / 1e9 if ms else float("nan"))
    print(f"{name:12} {kept:6.3f}  " + "  ".join(
        f"{', '.join(f'{x:4.0f}' for x in rounds[s]):>22}" for s in settings), flush=True)
