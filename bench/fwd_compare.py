"""Forward-only comparison on one GPU, one process: the sm90 template (TMA + wgmma), the
sm80 template (AE_DISABLE_SM90=1), PyTorch SDPA (cuDNN, flash) and, where it imports,
FlashAttention-4 (bench/fa4.py; plain, causal and its own softcap), TFLOPS with the
FlashAttention convention (16k tokens, hidden 2048), plus each kernel's max difference from
the other template as a sanity check, and the SASS facts of the sm90 kernel (HGMMA count,
local memory) when nvcc and cuobjdump are on PATH.

    PYTHONPATH=python python bench/fwd_compare.py [--seqs 4096,16384] [--dims 64,128,256,192/256]

A head dim "Dqk/Dv" gives unequal ones (TFLOPS count 2 B H S^2 (Dqk + Dv)).
"""
import argparse
import os
import shutil
import subprocess
import tempfile

import torch
import torch.nn.functional as F
import triton.testing as tt
from torch.nn.attention import SDPBackend, sdpa_kernel

import attention_engine as ae
from attention_engine import mods
from fa4 import fa4  # bench/fa4.py: FlashAttention-4 where it imports, else None

HERE = os.path.dirname(os.path.abspath(__file__))


def bench_ms(fn):
    return tt.do_bench(fn, warmup=30, rep=200, return_mode="median")


def with_sm90(enabled, fn):
    old = os.environ.pop("AE_DISABLE_SM90", None)
    if not enabled:
        os.environ["AE_DISABLE_SM90"] = "1"
    try:
        return fn()
    finally:
        os.environ.pop("AE_DISABLE_SM90", None)
        if old is not None:
            os.environ["AE_DISABLE_SM90"] = old


def sass_facts(attn, d):
    nvcc, objdump = shutil.which("nvcc"), shutil.which("cuobjdump")
    if not (nvcc and objdump):
        return "no nvcc/cuobjdump"
    src = attn.variant.kernel_source("fwd", d, d, True, [], family="sm90")["source"]
    with tempfile.TemporaryDirectory() as tmp:
        cu, cubin = os.path.join(tmp, "k.cu"), os.path.join(tmp, "k.cubin")
        open(cu, "w").write(src)
        r = subprocess.run([nvcc, "-arch=sm_90a", "-cubin", "-O3", "--expt-relaxed-constexpr", "-I", os.path.join(HERE, "..", "templates"),
                            "-o", cubin, cu], capture_output=True, text=True)
        if r.returncode:
            return "nvcc failed: " + r.stderr[-300:]
        sass = subprocess.run([objdump, "-sass", cubin], capture_output=True, text=True).stdout
    count = lambda op: sum(line.count(op) for line in sass.splitlines())
    return (f"HGMMA {count('HGMMA')}, UTMALDG {count('UTMALDG')}, LDL {count('LDL')}, "
            f"STL {count('STL')}, SETMAXREG {count('USETMAXREG')}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqs", default="4096,16384")
    ap.add_argument("--dims", default="64,128,256")
    args = ap.parse_args()
    variants = {
        "plain": (ae.compile(), False),
        "causal": (ae.compile(mask_mod=mods.causal), True),
        "softcap": (ae.compile(mods.softcap(30.0)), False),
        "alibi+causal": (None, True),  # built per head count
        "sigmoid": (ae.compile(mods.sigmoid(-4.0), normalize="none"), False),
    }
    print("| case | S | D | sm90 | sm80 | cuDNN | flash | FA4 | sm90 vs sm80 max diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for dims in args.dims.split(","):
        d, dv = (int(x) for x in dims.split("/")) if "/" in dims else (int(dims), int(dims))
        for s in map(int, args.seqs.split(",")):
            h = 2048 // d
            b = max(1, 16384 // s)
            torch.manual_seed(0)
            q, k, v = (torch.randn(b, h, s, x, device="cuda", dtype=torch.bfloat16) for x in (d, d, dv))
            for name, (attn, causal) in variants.items():
                if name == "alibi+causal":
                    attn = ae.compile(mods.alibi(mods.alibi_slopes(h, device="cuda")), mods.causal)
                if d != 128 and name not in ("plain", "causal"):
                    continue
                flops = 2 * b * h * s * s * (d + dv) * (0.5 if causal else 1.0)
                tf = lambda ms: f"{flops / ms / 1e9:.0f}"
                backend = with_sm90(True, lambda: attn.backend_for(q, k, v))
                o90 = with_sm90(True, lambda: attn(q, k, v))
                o80 = with_sm90(False, lambda: attn(q, k, v))
                diff = (o90.float() - o80.float()).abs().max().item()
                t90 = with_sm90(True, lambda: bench_ms(lambda: attn(q, k, v)))
                t80 = with_sm90(False, lambda: bench_ms(lambda: attn(q, k, v)))
                cud = fl = "-"
                if name in ("plain", "causal"):
                    sdpa = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                    for backend_, name_ in ((SDPBackend.CUDNN_ATTENTION, "cud"), (SDPBackend.FLASH_ATTENTION, "fl")):
                        with sdpa_kernel(backend_):
                            try:
                                t = tf(bench_ms(sdpa))
                            except RuntimeError:  # no such kernel at these head dims
                                t = "n/a"
                        cud, fl = (t, fl) if name_ == "cud" else (cud, t)
                f4 = "-"
                if fa4 is not None and name in ("plain", "causal", "softcap") and d == dv:
                    q4, k4, v4 = (x.transpose(1, 2).contiguous() for x in (q, k, v))
                    cap = 30.0 if name == "softcap" else 0.0
                    try:
                        f4 = tf(bench_ms(lambda: fa4(q4, k4, v4, causal=causal, softcap=cap)))
                    except Exception as e:  # noqa: BLE001
                        f4 = f"n/a ({type(e).__name__})"
                    del q4, k4, v4
                print(f"| {name} ({backend}) | {s} | {dims} | {tf(t90)} | {tf(t80)} | {cud} | {fl} | {f4} | "
                      f"{diff:.1e} |", flush=True)
    print()
    print("sm90 SASS (plain, D128):", sass_facts(variants["plain"][0], 128))


if __name__ == "__main__":
    main()
