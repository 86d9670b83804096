"""Learned block sparsity (SeerAttention-style block-sparse attention): does time follow the
fraction of blocks kept? Forward and fwd+bwd, bf16, B 1, H 32, D 128, causal, block 64:

- ours dense causal: `ae.compile(mask_mod=ae.mods.causal)(q, k, v)`, the baseline every
  speedup is against;
- ours block-sparse: `ae.seer.BlockSparseAttention(mask_mod=ae.mods.causal,
  block_size=block)(q, k, v, blocks)`, blocks bool [1, H, nq, nk];
- flex block-sparse: torch's flex_attention under torch.compile(dynamic=False) with a
  BlockMask.from_kv_blocks of the same blocks (the diagonal blocks partial, under the causal
  mask_mod; the kept blocks below it full), built once, outside the timing. GPU only;
- ours flex drop-in: `ae.flex_attention(q, k, v, block_mask=)` with that same BlockMask.

The blocks: per head, a random set (seeded torch.Generator on the device) of the given
fraction of the causal (lower-triangular) blocks, the diagonal always among them so that no
query row is empty; at small lengths the diagonal alone can be more than the fraction asked
for, so the table's "kept" is the fraction actually kept. Every method's forward output is
checked against ours block-sparse before it is timed (relative Frobenius error <= 2e-2, else
"wrong"), and ours block-sparse against eager attention under the equivalent element mask (all
rows in --dry-run, the last two query blocks on a GPU).

TFLOPS (printed as each case is measured) count the kept scores only: 4 H D per kept score
forward, 3.5x that for fwd+bwd; the final table gives times and speedups (x dense: ours dense
causal's time over the method's; x flex: flex block-sparse's time over the method's).

Flex at block 64 on Hopper: torch's default tiles for bf16 D 128 (forward 128 query rows,
backward 128 keys) do not divide a 64 block, so without autotuning flex refuses the forward
(ValueError) and finds no backward kernel. --flex-mode defaults to max-autotune-no-cudagraphs,
whose candidate tiles include 64 and 32 (compile time: a minute or so per length, outside the
timing); --flex-mode default gives torch's plain compile with flex's tiles set to the block
(kernel_options BLOCK_M / BLOCK_N and the backward's), --flex-mode none leaves flex out.

fwd+bwd is timed at every length unless --no-bwd, or where a rough estimate of its memory
(activations, gradients, block tables) exceeds 90% of the GPU's free memory; then that
length is forward only ("-"). On an H200, 128k fits.

    PYTHONPATH=python python bench/sparse_bench.py [--seqlens 32k,128k] [--densities 0.1,0.25,0.5]
    PYTHONPATH=python python bench/sparse_bench.py --dry-run    # CPU, tiny, float32: plumbing only
"""
from __future__ import annotations

import argparse
import gc
import math
import sys

import torch

import attention_engine as ae
from decode_bench import timed  # median seconds per call (CUDA events on a GPU)

def parse_len(s: str) -> int:
    s = s.strip().lower()
    return int(s[:-1]) * 1024 if s.endswith("k") else int(s)


def random_blocks(H: int, nq: int, keep: float, gen: torch.Generator) -> torch.Tensor:
    """bool [1, H, nq, nq]: per head, round(keep x causal blocks) blocks (at least the
    diagonal), the diagonal plus random blocks below it."""
    dev = gen.device
    causal = nq * (nq + 1) // 2
    extra = min(max(round(keep * causal) - nq, 0), causal - nq)  # below the diagonal
    below = torch.ones(nq, nq, dtype=torch.bool, device=dev).tril(-1)
    score = torch.rand(H, nq * nq, generator=gen, device=dev).masked_fill_(~below.view(-1), -1.0)
    blocks = torch.zeros(H, nq * nq, dtype=torch.bool, device=dev)
    if extra:
        blocks.scatter_(1, score.topk(extra, dim=1).indices, True)
    return (blocks.view(H, nq, nq) | torch.eye(nq, dtype=torch.bool, device=dev)).unsqueeze(0)


def kept_scores(blocks: torch.Tensor, S: int, block: int) -> float:
    """Scores computed, over all heads: kept blocks below the diagonal whole, the diagonal
    blocks' causal half (the last block cut at S)."""
    nq = blocks.shape[-1]
    rows = (S - torch.arange(nq, device=blocks.device) * block).clamp(max=block).double()
    below = (blocks & ~torch.eye(nq, dtype=torch.bool, device=blocks.device)).sum(-1)
    return float(block * (below * rows).sum() + blocks.shape[1] * (rows * (rows + 1) / 2).sum())


def flex_block_mask(blocks: torch.Tensor, S: int, block: int):
    """torch's BlockMask of the same blocks: diagonal blocks partial (causal mask_mod inside),
    kept blocks below the diagonal full."""
    from torch.nn.attention.flex_attention import BlockMask

    def ordered(dense):  # FlexAttention's layout: (count, kept columns first) per query block
        d = dense.to(torch.int8)
        idx = torch.sort(d, dim=-1, descending=True, stable=True).indices
        return d.sum(-1, dtype=torch.int32), idx.to(torch.int32).contiguous()
    diag = torch.eye(blocks.shape[-1], dtype=torch.bool, device=blocks.device)
    return BlockMask.from_kv_blocks(*ordered(blocks & diag), *ordered(blocks & ~diag),
                                    BLOCK_SIZE=block, mask_mod=ae.mods.causal,
                                    seq_lengths=(S, S))


def reference_rows(q, k, v, blocks, block: int, rows: int) -> torch.Tensor:
    """Eager float32 attention of the last `rows` queries under the element mask the blocks
    mean (block kept and causal): [1, H, rows, D]."""
    S = k.shape[2]
    r = torch.arange(S - rows, S, device=q.device)
    c = torch.arange(S, device=q.device)
    keep = blocks[0][:, r // block][:, :, c // block] & (r[:, None] >= c[None, :])
    s = q[0, :, S - rows:].float() @ k[0].float().transpose(-1, -2) / math.sqrt(q.shape[-1])
    p = s.masked_fill(~keep, float("-inf")).softmax(-1)
    return (p @ v[0].float()).unsqueeze(0)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).norm() / ref.float().norm()).item()


def bwd_fits(S: int, H: int, D: int, elt: int, nq: int) -> bool:
    """Rough: q, k, v, dout, out, their gradients, fp32 dQ accumulators, slack; flex's block
    tables (kv and q, partial and full) and the masks."""
    if not torch.cuda.is_available():
        return True
    need = 16 * H * S * D * elt + 8 * H * nq * nq * 4
    return need < 0.9 * torch.cuda.mem_get_info()[0]


def failed(where: str, e: Exception) -> None:
    print(f"{where}: {type(e).__name__}: {str(e)[:300]}", file=sys.stderr, flush=True)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # after an out-of-memory, for the cases that follow


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqlens", default="32768,131072", help="e.g. 8k,32k,128k")
    ap.add_argument("--densities", default="0.1,0.25,0.5", help="fraction of causal blocks kept")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--no-bwd", action="store_true", help="forward only")
    ap.add_argument("--flex-mode", default="max-autotune-no-cudagraphs",
                    help="torch.compile mode for flex ('default': none)")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    cuda = not args.dry_run
    if args.dry_run:
        args.seqlens, args.heads, args.head_dim, args.block, args.reps = "256", 2, 16, 16, 1
    dev, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    H, D, bs = args.heads, args.head_dim, args.block
    dense = ae.compile(mask_mod=ae.mods.causal)
    sparse = ae.seer.BlockSparseAttention(mask_mod=ae.mods.causal, block_size=bs)
    flex = None
    if cuda and args.flex_mode != "none":
        from torch.nn.attention.flex_attention import flex_attention
        mode = None if args.flex_mode == "default" else args.flex_mode
        flex = torch.compile(flex_attention, dynamic=False, mode=mode)
    # Without autotuning, flex's tiles set to the block where its defaults do not divide it.
    flex_tiles = None
    if args.flex_mode == "default" and args.block < 128:
        flex_tiles = {key: args.block for key in ("BLOCK_M", "BLOCK_N", "BLOCK_M1", "BLOCK_N1",
                                                  "BLOCK_M2", "BLOCK_N2")}

    rows = []  # (S, density asked, kept, method, fwd s or cell text, fwd+bwd s or cell text)
    for S in map(parse_len, args.seqlens.split(",")):
        nq = -(-S // bs)
        bwd = not args.no_bwd and bwd_fits(S, H, D, torch.finfo(dtype).bits // 8, nq)
        gen = torch.Generator(device=dev).manual_seed(0)
        q, k, v = (torch.randn(1, H, S, D, device=dev, dtype=dtype, generator=gen).requires_grad_()
                   for _ in range(3))
        do = torch.randn(1, H, S, D, device=dev, dtype=dtype, generator=gen)

        def measure(name, fn, flops, dense_t=None):
            """Times fn forward, then fwd+bwd (a failure there keeps the forward's time),
            prints one line; (fwd s, fwd+bwd s, or None without bwd, or "n/a")."""
            with torch.no_grad():
                t_f = timed(fn, args.reps)
            line = f"S {S}  {name}: fwd {t_f * 1e3:.2f} ms, {flops / t_f / 1e12:.3g} TFLOPS"
            if dense_t and isinstance(dense_t[0], float):
                line += f", {dense_t[0] / t_f:.2f}x dense"
            t_fb = None
            if bwd:
                try:
                    t_fb = timed(lambda: torch.autograd.grad(fn(), (q, k, v), do), args.reps)
                    line += (f"; fwd+bwd {t_fb * 1e3:.2f} ms, "
                             f"{3.5 * flops / t_fb / 1e12:.3g} TFLOPS")
                    if dense_t and isinstance(dense_t[1], float):
                        line += f", {dense_t[1] / t_fb:.2f}x dense"
                except Exception as e:  # noqa: BLE001
                    failed(f"S {S} {name} fwd+bwd", e)
                    t_fb = "n/a"
            print(line, flush=True)
            return t_f, t_fb

        try:
            dense_t = measure("ours dense causal", lambda: dense(q, k, v),
                              4 * H * D * S * (S + 1) / 2)
        except Exception as e:  # noqa: BLE001
            failed(f"S {S} ours dense causal", e)
            dense_t = ("n/a", "n/a")
        rows.append((S, None, "1.000", "ours dense causal", *dense_t))

        for keep in map(float, args.densities.split(",")):
            blocks = random_blocks(H, nq, keep, gen)
            kept = f"{blocks.sum().item() / (H * nq * (nq + 1) / 2):.3f}"
            flops = 4 * D * kept_scores(blocks, S, bs)
            bm = flex_block_mask(blocks, S, bs)
            methods = {
                "ours block-sparse": lambda: sparse(q, k, v, blocks),
                "flex block-sparse": (lambda: flex(q, k, v, block_mask=bm,
                                                   kernel_options=flex_tiles)) if flex else None,
                "ours flex drop-in": lambda: ae.flex_attention(q, k, v, block_mask=bm),
            }
            with torch.no_grad():
                ref = methods["ours block-sparse"]()
                n_rows = S if args.dry_run else min(S, 2 * bs)
                err = rel_err(ref[:, :, S - n_rows:], reference_rows(q, k, v, blocks, bs, n_rows))
            print(f"S {S}  kept {kept}: ours block-sparse vs eager reference ({n_rows} rows): "
                  f"{err:.1e}", flush=True)
            for name, fn in methods.items():
                if fn is None:
                    rows.append((S, keep, kept, name, "n/a", "n/a"))
                    continue
                try:
                    if name == "ours block-sparse":
                        if err > 2e-2:
                            raise AssertionError(f"differs from the eager reference by {err:.1e}")
                    else:
                        with torch.no_grad():
                            e = rel_err(fn(), ref)
                        if e > 2e-2:
                            raise AssertionError(f"differs from ours block-sparse by {e:.1e}")
                    t = measure(f"kept {kept}  {name}", fn, flops, dense_t)
                except AssertionError as e:
                    print(f"S {S} kept {kept} {name}: {e}", file=sys.stderr)
                    t = ("wrong", "wrong")
                except Exception as e:  # noqa: BLE001
                    failed(f"S {S} kept {kept} {name}", e)
                    t = ("n/a", "n/a")
                rows.append((S, keep, kept, name, *t))
            del blocks, bm, methods, ref
        del q, k, v, do
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()

    def ms(t):
        return f"{t * 1e3:.2f}" if isinstance(t, float) else (t or "-")

    def ratio(a, b):
        return f"{a / b:.2f}" if isinstance(a, float) and isinstance(b, float) else "-"

    print(f"\nblock-sparse causal attention, B 1, H {H}, D {D}, block {bs}, "
          + (f"bf16, {torch.cuda.get_device_name()}" if cuda else "float32, CPU dry run")
          + "; kept: fraction of the causal blocks computed; x dense / x flex: that method's "
            "time over this row's")
    print("| S | kept | method | fwd ms | fwd+bwd ms | fwd × dense | fwd+bwd × dense "
          "| × flex fwd | × flex fwd+bwd |")
    print("|---|---|---|---|---|---|---|---|---|")
    for S, keep, kept, name, tf, tfb in rows:
        d = next(r for r in rows if r[0] == S and r[3] == "ours dense causal")
        fx = next((r for r in rows if r[0] == S and keep is not None and r[1] == keep
                   and r[3] == "flex block-sparse"), (None,) * 6)
        print(f"| {S} | {kept} | {name} | {ms(tf)} | {ms(tfb)} | {ratio(d[4], tf)} "
              f"| {ratio(d[5], tfb)} | {ratio(fx[4], tf)} | {ratio(fx[5], tfb)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
