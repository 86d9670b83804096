"""Trains a SeerAttention gate (attention_engine.seer) on a random-init attention layer and
shows the distillation loss falling, then what the trained gate keeps: the fraction of blocks,
the share of the attention map's pooled mass in them, and the output's error against dense
attention. The layer: random token embeddings, q/k/v projections, rotary positions, causal
softmax with ALiBi (a variant, to show the gate learns the variant's map).

    python bench/seer_train.py [--steps 300] [--seq 512] [--block 32] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import time

import torch

import attention_engine as ae
from attention_engine import mods
from attention_engine.seer import SeerAttention, pooled_attention_map, select_blocks


def rotary(x, base=10000.0):
    S, d = x.shape[-2], x.shape[-1]
    ang = torch.arange(S, device=x.device)[:, None] * base ** (-torch.arange(0, d, 2, device=x.device) / d)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * ang.cos() - x2 * ang.sin(), x2 * ang.cos() + x1 * ang.sin()], -1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--threshold", type=float, default=0.02)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.manual_seed(0)
    dev, H, Hk, D, S = a.device, a.heads, a.kv_heads, a.dim, a.seq
    vocab, width = 1000, H * D
    embed = torch.randn(vocab, width, device=dev)
    wq = torch.randn(width, H * D, device=dev) / width ** 0.5
    wk = torch.randn(width, Hk * D, device=dev) / width ** 0.5
    wv = torch.randn(width, Hk * D, device=dev) / width ** 0.5
    score_mod = mods.alibi(mods.alibi_slopes(H, device=dev))
    seer = SeerAttention(H, Hk, D, score_mod, block_size=a.block, threshold=a.threshold,
                         hidden=64).to(dev)
    opt = torch.optim.AdamW(seer.gate.parameters(), lr=2e-3)

    def batch(n=2):
        x = embed[torch.randint(0, vocab, (n, S), device=dev)]
        q = rotary((x @ wq).view(n, S, H, D).transpose(1, 2))
        k = rotary((x @ wk).view(n, S, Hk, D).transpose(1, 2))
        v = (x @ wv).view(n, S, Hk, D).transpose(1, 2)
        return q, k, v

    print(f"SeerAttention gate: S {S}, block {a.block}, {H}/{Hk} heads, D {D}, ALiBi + causal, "
          f"{a.steps} steps on {dev}")
    t0 = time.time()
    for step in range(1, a.steps + 1):
        q, k, _ = batch()
        loss = seer.distill_loss(q, k)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 1 or step % 50 == 0:
            print(f"step {step:4d}  KL {loss.item():.4f}  ({time.time() - t0:.0f} s)", flush=True)

    q, k, v = batch()
    target = pooled_attention_map(seer.dense, q, k, a.block)
    blocks = seer.blocks(q, k)
    causal = torch.ones_like(blocks[0, 0]).tril()
    density = blocks.float().sum() / (causal.sum() * blocks.shape[0] * blocks.shape[1])
    recall = (target * blocks).sum() / target.sum()
    dense = seer.dense(q, k, v)
    err = ((seer(q, k, v) - dense).norm() / dense.norm()).item()
    by_ratio = select_blocks(seer.gate(q, k), keep_ratio=density.item())
    print(f"threshold {a.threshold}: {density:.1%} of the causal blocks kept, holding "
          f"{recall:.1%} of the pooled map's mass; output error vs dense {err:.3f} "
          f"(the same fraction by keep_ratio holds {(target * by_ratio).sum() / target.sum():.1%})")


if __name__ == "__main__":
    main()
