"""A/B of two template trees in one call on the GPU machine: forward and fwd+bwd TFLOPS of the
same cases with the kernels compiled from this tree's templates (embedded in the build) and
from another tree's (AE_TEMPLATE_DIR, e.g. `git archive <commit> templates` unpacked under
build/), each in its own processes, alternating twice so that clock drift lands in both.
The kernels are compiled first, both trees at once (a process per tree, a thread per case);
the disk cache, keyed by the headers' contents, keeps the two apart.

    python bench/template_ab.py --base build/ab/base/templates [--cases "plain D128|causal"]
    python bench/template_ab.py --base-env "AE_SM90_FWD=,,,,0"   # this tree, one override

With --base-env the base is this tree's templates with NAME=VALUE in its environment (a
tuning override, csrc/plan/overrides.h) instead of another template tree; "this" runs without
NAME whatever the caller's environment has.

bf16, 16k tokens (B = 16384 / S), H = 2048 // Dqk heads; TFLOPS by the FLOPs the mask keeps
(fwd: 2 B H S^2 (Dqk + Dv); fwd+bwd: 3.5 times that).
"""
import argparse
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

CASES = ["plain D128 S8k", "causal D128 S8k", "plain D64 S8k", "causal D64 S8k",
         "plain D192/128 S8k", "causal D192/128 S8k", "softcap D128 S8k", "alibi D128 S8k", "document D128 S16k",
         "plain D256 S8k", "causal D256 S8k"]


def make(name, S, H):
    import torch
    import attention_engine as ae
    from attention_engine import mods
    if name == "plain":
        return ae.compile(), 1.0
    if name == "causal":
        return ae.compile(mask_mod=mods.causal), 0.5
    if name == "softcap":
        return ae.compile(mods.softcap(30.0)), 1.0
    if name == "alibi":
        return ae.compile(mods.alibi(mods.alibi_slopes(H, device="cuda")), mods.causal), 0.5
    if name == "document":  # 16 documents of random lengths, causal within each
        g = torch.Generator().manual_seed(0)
        cuts = torch.sort(torch.randperm(S // 64 - 1, generator=g)[:15] + 1).values * 64
        lengths = torch.diff(torch.cat([torch.tensor([0]), cuts, torch.tensor([S])]))
        ids = torch.repeat_interleave(torch.arange(16), lengths).cuda()
        return ae.compile(mask_mod=mods.document_mask(ids)), float((lengths * (lengths + 1) / 2).sum()) / S**2
    raise ValueError(name)


def worker(cases, warm_only):
    import torch
    import triton.testing as tt
    out = {}

    def setup(case):
        name, dims, seq = case.split()
        D, Dv = (int(x) for x in (dims[1:] + "/" + dims[1:]).split("/")[:2])
        S = int(seq[1:-1]) * 1024
        B, H = max(1, 16384 // S), 2048 // D
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
                for _ in range(2))
        v = torch.randn(B, H, S, Dv, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
        do = torch.randn(B, H, S, Dv, device="cuda", dtype=torch.bfloat16, generator=g)
        attn, frac = make(name, S, H)
        torch.autograd.grad(attn(q, k, v), (q, k, v), do)  # compiles
        return q, k, v, do, attn, 2 * B * H * S * S * (D + Dv) * frac

    if warm_only:
        with ThreadPoolExecutor(len(cases)) as pool:
            list(pool.map(setup, cases))
        torch.cuda.synchronize()
        return out
    for case in cases:
        q, k, v, do, attn, flops = setup(case)
        with torch.no_grad():
            tf = tt.do_bench(lambda: attn(q, k, v), warmup=20, rep=150, return_mode="median")
        tb = tt.do_bench(lambda: torch.autograd.grad(attn(q, k, v), (q, k, v), do), warmup=20,
                         rep=150, return_mode="median")
        out[case] = (flops / tf / 1e9, 3.5 * flops / tb / 1e9)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="", help="the other template tree (AE_TEMPLATE_DIR)")
    ap.add_argument("--base-env", default="", help="NAME=VALUE: the base is this tree with it set")
    ap.add_argument("--cases", default="", help="regex on the case names")
    ap.add_argument("--worker", default="")
    ap.add_argument("--warm", action="store_true")
    args = ap.parse_args()
    cases = [c for c in CASES if re.search(args.cases, c)]
    if not cases:
        sys.exit(f"no case matches {args.cases!r}: {CASES}")
    if args.worker:
        print(json.dumps(worker(cases, args.warm)))
        return
    if bool(args.base) == bool(args.base_env) or (args.base_env and "=" not in args.base_env):
        sys.exit("give --base TREE or --base-env NAME=VALUE (one of them)")
    base = os.path.abspath(args.base) if args.base else ""

    def run(tree, warm):
        env = dict(os.environ)
        env.pop("AE_TEMPLATE_DIR", None)
        if args.base_env:
            env.pop(args.base_env.split("=", 1)[0], None)
        if tree == "base" and base:
            env["AE_TEMPLATE_DIR"] = base
        elif tree == "base":
            name, value = args.base_env.split("=", 1)
            env[name] = value
        cmd = [sys.executable, __file__, "--cases", args.cases, "--worker", tree]
        r = subprocess.run(cmd + (["--warm"] if warm else []), env=env, capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"{tree} worker failed:\n{r.stderr[-3000:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(2) as pool:  # compile both trees at once
        list(pool.map(lambda t: run(t, True), ["this", "base"]))
    res = {"this": [], "base": []}
    for _ in range(2):
        for tree in ("base", "this"):
            res[tree].append(run(tree, False))
    import torch
    print(f"{torch.cuda.get_device_name()}: TFLOPS fwd / fwd+bwd, two rounds each; "
          f"base = {args.base or args.base_env}")
    print(f"{'case':20} {'base fwd':>11} {'this fwd':>11} {'base f+b':>11} {'this f+b':>11}  ratio f / f+b")
    for c in cases:
        b = [r[c] for r in res["base"]]
        t = [r[c] for r in res["this"]]
        fmt = lambda xs, i: "/".join(f"{x[i]:.0f}" for x in xs)
        rf = max(x[0] for x in t) / max(x[0] for x in b)
        rb = max(x[1] for x in t) / max(x[1] for x in b)
        print(f"{c:20} {fmt(b, 0):>11} {fmt(t, 0):>11} {fmt(b, 1):>11} {fmt(t, 1):>11}  {rf:.3f} / {rb:.3f}")


if __name__ == "__main__":
    main()
