"""Varlen prefill (issue 18's target: 16 packed documents in 16k tokens at >= 90% of the dense
causal TFLOPS, counted on the FLOPs the documents need), forward and fwd+bwd:

- ours varlen: `attn.varlen(q, k, v, cu_seqlens, cu_seqlens)` with a causal mask (the kernel
  route, the default: the attention_varlen op, whose forward kernels address each document's
  rows through cu_seqlens, and so do its backward's; the lengths checked on the host, one
  synchronization per call);
- ours varlen unchecked: the same with max_seqlen given and check_lengths=False (nothing read
  back, FlashAttention's contract);
- ours varlen padded: the same with AE_VARLEN=padded (the documents padded into one batch of
  the longest one's length);
- ours varlen packed: the same with AE_VARLEN=packed (the documents back to back in one batch
  row, each query masked to its own document: inference._varlen_route);
- ours document mask: the same packed tokens as one sequence under a causal document mask
  (`mods.document_mask`: block skipping instead of padding, the other way to run varlen);
- FlexAttention with the same document mask (its block mask built once, outside the timing);
- dense causal over the same 16k tokens as one sequence, for scale (its own FLOPs).

bf16, D 128, 16 heads (hidden 2048). TFLOPS = FLOPs needed (4 H D per kept score forward,
3.5x that for fwd+bwd) / time, the same count for every method, so a method's waste shows as a
lower figure. Each method's output is checked against ours varlen's before timing.

    PYTHONPATH=python python bench/varlen_bench.py [--docs 16] [--tokens 16384] [--skew 0,1]
    PYTHONPATH=python python bench/varlen_bench.py --dry-run    # CPU, tiny, plumbing only

--skew 0: equal lengths; 1: random lengths (cuts at random multiples of 64, as
bench/bwd_compare.py's document case).
"""
from __future__ import annotations

import argparse
import sys

import torch

import attention_engine as ae
from attention_engine import mods
from decode_bench import timed, with_env  # timed: median seconds per call (CUDA events on a GPU)


def lengths(tokens: int, docs: int, skew: int, seed: int = 0) -> torch.Tensor:
    if not skew:
        base = torch.full((docs,), tokens // docs)
        base[: tokens % docs] += 1
        return base
    g = torch.Generator().manual_seed(seed)
    cuts = torch.sort(torch.randperm(tokens // 64 - 1, generator=g)[: docs - 1] + 1).values * 64
    return torch.diff(torch.cat([torch.tensor([0]), cuts, torch.tensor([tokens])]))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--skew", default="0,1")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    cuda = not args.dry_run
    if args.dry_run:
        args.docs, args.tokens = 3, 192
    dev, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    H, D = (16, 128) if cuda else (2, 16)
    attn = ae.compile(mask_mod=mods.causal)
    flex = None
    if cuda:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        flex = torch.compile(flex_attention, dynamic=False)
    rows = []
    for skew in map(int, args.skew.split(",")):
        lens = lengths(args.tokens, args.docs, skew)
        T = int(lens.sum())
        cu = torch.cat([torch.zeros(1, dtype=torch.int64), lens.cumsum(0)]).to(dev)
        ids = torch.repeat_interleave(torch.arange(args.docs), lens).to(dev)
        kept = float((lens * (lens + 1) // 2).sum())  # causal scores within the documents
        flops = 4 * H * D * kept
        g = torch.Generator(device=dev).manual_seed(0)
        mk = lambda: torch.randn(T, H, D, device=dev, dtype=dtype, generator=g).requires_grad_()
        q, k, v = mk(), mk(), mk()
        do = torch.randn(T, H, D, device=dev, dtype=dtype, generator=g)
        as_one = lambda x: x.transpose(0, 1).unsqueeze(0)  # [T, H, D] -> [1, H, T, D]
        doc_attn = ae.compile(mask_mod=mods.document_mask(ids))
        route = lambda name: with_env("AE_VARLEN", name, lambda: attn.varlen(q, k, v, cu, cu))
        mx = int(lens.max())
        methods = {
            "ours varlen": route("kernel"),
            "ours varlen unchecked": with_env(
                "AE_VARLEN", "kernel",
                lambda: attn.varlen(q, k, v, cu, cu, mx, mx, check_lengths=False)),
            "ours varlen padded": route("padded"),
            "ours varlen packed": route("packed"),
            "ours document mask": lambda: doc_attn(as_one(q), as_one(k), as_one(v))[0].transpose(0, 1),
        }
        if flex is not None:
            def same_doc_causal(b, h, qi, ki):
                return (ids[qi] == ids[ki]) & (qi >= ki)
            bm = create_block_mask(same_doc_causal, None, None, T, T, device=dev)
            methods["flex document mask"] = lambda: flex(as_one(q), as_one(k), as_one(v),
                                                         block_mask=bm)[0].transpose(0, 1)
        ref = None
        line = {"case": f"{args.docs} docs in {T} tokens, {'random' if skew else 'equal'} "
                        f"lengths ({int(lens.min())}-{int(lens.max())})"}
        for name, fn in methods.items():
            with torch.no_grad():
                out = fn()
            if ref is None:
                ref = out.float()
            err = ((out.float() - ref).norm() / ref.norm()).item()
            if err > 2e-2:
                print(f"{name}: differs from ours varlen by {err:.1e}", file=sys.stderr)
                line[name] = "wrong"
                continue
            with torch.no_grad():
                t_f = timed(fn, args.reps) * 1e3
            t_fb = timed(lambda: torch.autograd.grad(fn(), (q, k, v), do), args.reps) * 1e3
            line[name] = f"{flops / t_f / 1e9:.0f} / {3.5 * flops / t_fb / 1e9:.0f}"
            print(f"{line['case']}  {name}: {line[name]} TFLOPS fwd / fwd+bwd", flush=True)
        rows.append(line)
        del q, k, v, do
    # Dense causal over the same tokens as one sequence, by its own FLOPs (for scale).
    T = args.tokens
    g = torch.Generator(device=dev).manual_seed(1)
    q, k, v, do = (torch.randn(1, H, T, D, device=dev, dtype=dtype, generator=g).requires_grad_()
                   for _ in range(4))
    dense = 4 * H * D * T * (T + 1) / 2
    with torch.no_grad():
        t_f = timed(lambda: attn(q, k, v), args.reps) * 1e3
    t_fb = timed(lambda: torch.autograd.grad(attn(q, k, v), (q, k, v), do), args.reps) * 1e3
    dense_line = f"dense causal, one sequence of {T}: {dense / t_f / 1e9:.0f} / {3.5 * dense / t_fb / 1e9:.0f}"
    print(dense_line, flush=True)

    names = ["ours varlen", "ours varlen unchecked", "ours varlen padded", "ours varlen packed", "ours document mask",
             "flex document mask"]
    print("\nTFLOPS fwd / fwd+bwd by the FLOPs the documents need, "
          + (torch.cuda.get_device_name() if cuda else "CPU dry run"))
    print("| case | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for r in rows:
        print(f"| {r['case']} | " + " | ".join(r.get(n, "-") for n in names) + " |")
    print(dense_line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
