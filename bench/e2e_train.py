"""Training throughput of a Llama-style model with each attention implementation (issue 17's
end-to-end target): 8 layers, hidden 2048, 16 heads (D 128), SwiGLU MLP (5632), RMSNorm,
rotary embeddings, vocab 32000, bf16 weights, AdamW, batch x S 4096 tokens (--tokens). Per
attention variant (causal; ALiBi + causal; softcap + causal), one model per method, the same
initial weights and data (so the first losses agree); tokens/s from the median of CUDA-event
step times (forward, loss, backward, optimizer step). A method that cannot express a variant
shows "-", one that failed "n/a" (the reason on stderr).

    python bench/e2e_train.py [--steps 20] [--variants causal,alibi,softcap] [--layers 8]
    python bench/e2e_train.py --dry-run   # CPU, a tiny model, two steps: plumbing only

Methods: attention_engine (ae.compile; its fused kernels on CUDA), SDPA (is_causal; causal
only), FlexAttention under torch.compile (a causal block mask built once, the score_mod).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

import attention_engine as ae
from attention_engine import mods


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, attend):
        super().__init__()
        self.heads, self.attend = heads, attend
        self.norm1, self.norm2 = nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x, cos, sin):
        B, S, C = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, S, 3, self.heads, C // self.heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, S, D]
        q, k = rotary(q, cos, sin), rotary(k, cos, sin)
        x = x + self.proj(self.attend(q, k, v).transpose(1, 2).reshape(B, S, C))
        gate, up = self.gate_up(self.norm2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


class Model(nn.Module):
    def __init__(self, layers, dim, heads, hidden, vocab, seq, attend):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, hidden, attend) for _ in range(layers))
        self.norm = nn.RMSNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        d = dim // heads
        inv = 1.0 / 10000 ** (torch.arange(0, d // 2, dtype=torch.float32) / (d // 2))
        ang = torch.arange(seq, dtype=torch.float32)[:, None] * inv[None]
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)

    def forward(self, tokens):
        x = self.embed(tokens)
        cos, sin = self.cos.to(x.dtype), self.sin.to(x.dtype)
        for blk in self.blocks:
            x = blk(x, cos, sin)
        return self.head(self.norm(x))


def score_mod_of(variant: str, heads: int, device):
    if variant == "alibi":
        return mods.alibi(mods.alibi_slopes(heads, device=device))
    if variant == "softcap":
        return mods.softcap(30.0)
    return None


def attention_fn(method: str, variant: str, heads: int, seq: int, device):
    """The attention a model's blocks call, or None where the method cannot express it."""
    score_mod = score_mod_of(variant, heads, device)
    if method == "attention_engine":
        return ae.compile(score_mod, mods.causal)
    if method == "sdpa":
        if score_mod is not None:
            return None
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if method == "flex":
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        block_mask = create_block_mask(mods.causal, None, None, seq, seq, device=str(device))
        # Static shapes, as bench/attention_bench.py (with the default, dynamic=None, softcap's
        # backward failed under torch 2.11: "all unwrapped values must be FakeTensor").
        flex = (torch.compile(flex_attention, dynamic=False) if device.type == "cuda"
                else flex_attention)
        return lambda q, k, v: flex(q, k, v, score_mod=score_mod, block_mask=block_mask)
    raise ValueError(method)


def step_times(model, tokens, steps: int, warmup: int, cuda: bool):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    times, losses = [], []
    for i in range(warmup + steps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            end.record()
            end.synchronize()
            ms = start.elapsed_time(end)
        else:
            ms = (time.perf_counter() - t0) * 1e3
        losses.append(loss.item())
        if i >= warmup:
            times.append(ms)
    return statistics.median(times), losses


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=4096, help="sequence length (batch 1)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--variants", default="causal,alibi,softcap")
    ap.add_argument("--methods", default="attention_engine,sdpa,flex")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    if args.dry_run:
        device, dtype = torch.device("cpu"), torch.float32
        dims = dict(layers=2, dim=64, heads=4, hidden=128, vocab=256)
        args.tokens, args.steps, args.warmup = 64, 2, 0
        warnings.simplefilter("ignore")  # the reference-executor fallback warning on CPU
    else:
        device, dtype = torch.device("cuda"), torch.bfloat16
        dims = dict(layers=args.layers, dim=2048, heads=16, hidden=5632, vocab=32000)
    seq = args.tokens
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, dims["vocab"], (args.batch, seq + 1), generator=g).to(device)
    rows = []
    for variant in args.variants.split(","):
        row = {"variant": variant}
        for method in args.methods.split(","):
            attend = attention_fn(method, variant, dims["heads"], seq, device)
            if attend is None:
                row[method] = None
                continue
            torch.manual_seed(0)
            model = Model(dims["layers"], dims["dim"], dims["heads"], dims["hidden"],
                          dims["vocab"], seq, attend).to(device=device, dtype=dtype)
            try:
                ms, losses = step_times(model, tokens, args.steps, args.warmup, device.type == "cuda")
            except Exception as e:  # noqa: BLE001  (one method failing must not stop the others)
                print(f"{variant} {method}: failed: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
                row[method] = float("nan")
                continue
            if not all(math.isfinite(x) for x in losses):
                print(f"{variant} {method}: non-finite loss {losses}", file=sys.stderr)
            row[method] = args.batch * seq / (ms / 1e3)
            print(f"{variant:8s} {method:17s} {ms:8.1f} ms/step  {row[method]:9.0f} tokens/s  "
                  f"loss {losses[0]:.3f} -> {losses[-1]:.3f}", flush=True)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
    methods = args.methods.split(",")
    print(f"\ntokens/s, {dims['layers']} layers, hidden {dims['dim']}, S {seq}, batch {args.batch}, "
          f"{'CPU dry run' if args.dry_run else torch.cuda.get_device_name()}")
    print("| variant | " + " | ".join(methods) + " | ae / sdpa | ae / flex |")
    print("|---" * (len(methods) + 3) + "|")
    for r in rows:
        ok = lambda m: r.get(m) is not None and math.isfinite(r[m])
        cells = ["-" if r.get(m) is None else f"{r[m]:.0f}" if ok(m) else "n/a" for m in methods]
        ratio = lambda m: (f"{r['attention_engine'] / r[m]:.2f}" if ok(m) and ok("attention_engine")
                           else "-")
        print(f"| {r['variant']} | " + " | ".join(cells) + f" | {ratio('sdpa')} | {ratio('flex')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
