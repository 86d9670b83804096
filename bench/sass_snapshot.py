"""SASS of every kernel instantiation the compile-all check and the benchmarks use, for A/B of
template or codegen changes without a GPU: `snapshot` writes each instantiation's generated
source and its sm_90a SASS (nvcc -cubin -O3 with the instantiation's own options, then
cuobjdump), one file per kernel; `compare` lists, per kernel, whether two snapshots are
identical, else their instruction counts and the opcodes whose counts moved.

    python bench/sass_snapshot.py snapshot OUT_DIR [--templates DIR] [--jobs N] [--only REGEX]
    python bench/sass_snapshot.py compare BEFORE_DIR AFTER_DIR

Needs nvcc and cuobjdump (`pip download --no-deps nvidia-cuda-cuobjdump`, unzip its bin/; or
CUOBJDUMP=path). A snapshot of another commit: check it out in a worktree, build it, run this
script there (its kernel_source API must be this one's: introduced with docs/ARCHITECTURE.md).
"""
import argparse
import collections
import concurrent.futures as cf
import json
import math
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def variants():
    import torch

    import attention_engine as ae
    from attention_engine import mods
    return {
        "plain": ae.compile(),
        "causal": ae.compile(mask_mod=mods.causal),
        "sliding_window": ae.compile(mask_mod=mods.sliding_window(256)),
        "alibi": ae.compile(mods.alibi(mods.alibi_slopes(16)), mods.causal),
        "softcap": ae.compile(mods.softcap(30.0)),
        "relative_bias": ae.compile(mods.relative_bias(torch.zeros(16, 65, requires_grad=True), 32)),
        "document": ae.compile(mask_mod=mods.document_mask(torch.zeros(64, dtype=torch.long))),
        "sigmoid_none": ae.compile(mods.sigmoid(-4.0), normalize="none"),
        "sigmoid_causal": ae.compile(mods.sigmoid(-math.log(4096)), mods.causal, normalize="none"),
    }


def instantiations():
    """(tag, kernel_source info) for every kernel."""
    for name, attn in variants().items():
        dtypes = [str(t.dtype).replace("torch.", "") for t in attn.buffers]
        dims = [(64, 64), (96, 96), (128, 128), (256, 256), (192, 128)] if name == "plain" else \
            [(128, 128), (64, 64)]
        for kind, step, family in (("fwd", "fwd", "sm80"), ("fwd90", "fwd", "sm90"),
                                   ("bwd", "bwd", ""), ("block_state", "block_state", "")):
            for d_qk, d_v in dims:
                if (kind == "fwd90" and d_qk == 96) or \
                        (kind == "block_state" and ((d_qk, d_v) != (128, 128) or not attn.variant.has_mask)):
                    continue
                for grads in ([False, True] if kind == "bwd" and attn.buffers else [False]):
                    g = [t.requires_grad and grads for t in attn.buffers] if kind == "bwd" else []
                    info = attn.variant.kernel_source(step, d_qk, d_v, True, dtypes, family=family,
                                                      buffer_grads=g)
                    yield f"{name}-{kind}-{d_qk}x{d_v}{'-g' if grads else ''}", info
    import attention_engine as ae
    for step in ("bwd_prep", "bwd_dq"):
        yield f"rowpass-{step}", ae.compile().variant.kernel_source(step, 128, 128)


def sass_lines(cubin: str, cuobjdump: str) -> list:
    text = subprocess.run([cuobjdump, "-sass", cubin], capture_output=True, text=True,
                          check=True).stdout
    out = []
    for line in text.splitlines():
        m = re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(.*?);", line)
        if m:
            out.append(re.sub(r"\s+", " ", m.group(1)))
    return out


def snapshot(args):
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    cuobjdump = os.environ.get("CUOBJDUMP") or shutil.which("cuobjdump")
    if not (os.path.exists(nvcc) and cuobjdump):
        sys.exit("needs nvcc and cuobjdump (see the docstring)")
    templates = args.templates or os.path.join(HERE, "..", "templates")
    os.makedirs(args.dir, exist_ok=True)
    kernels = {t: i for t, i in instantiations() if re.search(args.only, t)}

    def one(tag):
        cu, cubin = (os.path.join(args.dir, tag + ext) for ext in (".cu", ".cubin"))
        open(cu, "w").write(kernels[tag]["source"])
        r = subprocess.run([nvcc, "-cubin", "-arch=sm_90a", "-std=c++17", "-DNDEBUG", "-O3",
                            "-I", templates, "-o", cubin, cu, *kernels[tag]["options"]],
                           capture_output=True, text=True)
        if r.returncode:
            return tag, "FAILED: " + r.stderr[-300:]
        lines = sass_lines(cubin, cuobjdump)
        os.remove(cubin)
        open(os.path.join(args.dir, tag + ".sass"), "w").write("\n".join(lines) + "\n")
        return tag, f"{len(lines)} instructions"

    with cf.ThreadPoolExecutor(args.jobs) as ex:
        for tag, msg in ex.map(one, sorted(kernels)):
            print(f"{tag:40s} {msg}", flush=True)
    json.dump({t: {"describe": i["describe"], "options": i["options"], "smem": i["smem"]}
               for t, i in kernels.items()}, open(os.path.join(args.dir, "index.json"), "w"), indent=1)


def opcodes(path: str) -> collections.Counter:
    c = collections.Counter()
    for line in open(path):
        m = re.match(r"(?:@!?U?P\w+ )?([A-Z][A-Z0-9_]*)", line.strip())
        if m:
            c[m.group(1)] += 1
    return c


def compare(args):
    same = 0
    for f in sorted(os.listdir(args.after)):
        if not f.endswith(".sass"):
            continue
        a, b = os.path.join(args.before, f), os.path.join(args.after, f)
        if not os.path.exists(a):
            print(f"{f:40s} new")
            continue
        if open(a).read() == open(b).read():
            same += 1
            continue
        x, y = opcodes(a), opcodes(b)
        moved = {k: (x[k], y[k]) for k in sorted(set(x) | set(y)) if x[k] != y[k]}
        print(f"{f:40s} {sum(x.values())} -> {sum(y.values())} {moved}")
    print(f"identical: {same}")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("snapshot")
    s.add_argument("dir")
    s.add_argument("--templates")
    s.add_argument("--jobs", type=int, default=2)
    s.add_argument("--only", default="", help="a regex: only the kernels whose tag matches")
    c = sub.add_parser("compare")
    c.add_argument("before")
    c.add_argument("after")
    args = ap.parse_args()
    snapshot(args) if args.cmd == "snapshot" else compare(args)


if __name__ == "__main__":
    main()
