"""Compiles one generated kernel with nvcc for sm_90a and writes its SASS (cuobjdump) to a
file, printing the opcode histogram: for reading what ptxas made of a template. Needs nvcc and
cuobjdump on PATH (the GPU machine has both; elsewhere cuobjdump and nvdisasm come from PyPI's
nvidia-cuda-cuobjdump / nvidia-cuda-nvdisasm wheels). The instantiation's own NVRTC options
(e.g. ptxas's register-usage level) are passed on.

    python bench/sass_dump.py bwd 128 128 --out $OUT/bwd_d128.sass [--variant softcap]
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import tempfile

import attention_engine as ae
from attention_engine import mods

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = {"plain": lambda: ae.compile(), "causal": lambda: ae.compile(mask_mod=mods.causal),
            "softcap": lambda: ae.compile(mods.softcap(30.0), mods.causal),  # as attention_bench
            "sigmoid": lambda: ae.compile(mods.sigmoid(-4.0), normalize="none"),
            "alibi": lambda: ae.compile(mods.alibi(mods.alibi_slopes(16)), mods.causal)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["fwd", "bwd", "fwd90", "block_state", "bwd_prep", "bwd_dq"])
    ap.add_argument("d_qk", type=int)
    ap.add_argument("d_v", type=int)
    ap.add_argument("--variant", default="plain", choices=sorted(VARIANTS))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    nvcc, objdump = shutil.which("nvcc"), shutil.which("cuobjdump")
    if not (nvcc and objdump):
        raise SystemExit("needs nvcc and cuobjdump on PATH")
    attn = VARIANTS[args.variant]()
    dtypes = [str(t.dtype).replace("torch.", "") for t in attn.buffers]
    step, family = {"fwd": ("fwd", "sm80"), "fwd90": ("fwd", "sm90")}.get(args.kind, (args.kind, ""))
    info = attn.variant.kernel_source(step, args.d_qk, args.d_v, True, dtypes, family=family)
    # AE_TEMPLATE_DIR: the same override the JIT honours, for A/B of template edits
    templates = os.environ.get("AE_TEMPLATE_DIR", os.path.join(HERE, "..", "templates"))
    with tempfile.TemporaryDirectory() as tmp:
        cu, cubin = os.path.join(tmp, "k.cu"), os.path.join(tmp, "k.cubin")
        open(cu, "w").write(info["source"])
        subprocess.run([nvcc, "-arch=sm_90a", "-cubin", "-O3", "--expt-relaxed-constexpr", "-I", templates,
                        "-o", cubin, cu, *info["options"]], check=True)
        sass = subprocess.run([objdump, "-sass", cubin], capture_output=True, text=True,
                              check=True).stdout
    open(args.out, "w").write(sass)
    ops = collections.Counter()
    for line in sass.splitlines():
        m = re.match(r"\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", line)
        if m:
            ops[m.group(1)] += 1
    print(info["describe"], "total", sum(ops.values()))
    print(" ".join(f"{op}:{n}" for op, n in ops.most_common(40)))


if __name__ == "__main__":
    main()
