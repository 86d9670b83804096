"""Code size and registers of the linear-attention kernels, on the CPU: each generated kernel
compiled by NVRTC for sm_90a as the runtime does, its cubin's .text section read with readelf
(no GPU). A kernel whose hot code outgrows the instruction cache stalls on "no instruction"
(ncu): GLA's gradients pass did at 41k instructions (bench/RESULTS.md, twenty-seventh session).

    PYTHONPATH=python python bench/code_size.py [--templates DIR] [--dims 128,128]

--templates: the template tree to compile (AE_TEMPLATE_DIR; default this checkout's templates/,
not the copy embedded at build time), e.g. `git archive <commit> templates` unpacked under
build/ for a before/after.
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile


def text_bytes(cubin: bytes) -> int:
    """The .text.<kernel> section's size of a cubin (one kernel per cubin here)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run(["readelf", "-SW", f.name], capture_output=True, text=True,
                             check=True).stdout
    sizes = [int(line.split("]", 1)[1].split()[4], 16) for line in out.splitlines()
             if " .text." in line]
    if len(sizes) != 1:
        raise SystemExit(f"expected one .text section, found {len(sizes)}")
    return sizes[0]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--templates", default=os.path.join(os.path.dirname(__file__), "..", "templates"))
    ap.add_argument("--dims", default="128,128")
    args = ap.parse_args()
    os.environ["AE_TEMPLATE_DIR"] = os.path.abspath(args.templates)
    cache = tempfile.mkdtemp(prefix="ae_code_size_")
    os.environ["AE_CACHE_DIR"] = cache  # (a fresh disk cache: each compile's cubin is the newest)
    from attention_engine import _C
    dk, dv = map(int, args.dims.split(","))
    print(f"| kernel | registers | instructions |\n|---|---|---|")
    for pc in (False, True):
        steps = _C.linear_kernel_sources(False, dk, dv, per_channel=pc, backward=True) + \
            _C.linear_kernel_sources(False, dk, dv, per_channel=pc)[1:]
        for st in steps:
            (r,) = _C.jit_check_arches(st["source"], st["entry"], arches=["sm_90a"],
                                       options=st["options"])
            if not r["ok"]:
                raise SystemExit(f"{st['describe']}: {r['error']}")
            newest = max(glob.glob(os.path.join(cache, "kernels", "*")), key=os.path.getmtime)
            blob = open(newest, "rb").read()
            size = text_bytes(blob[blob.find(b"\x7fELF"):])
            print(f"| {st['describe']} | {r['registers']} | {size // 16} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
