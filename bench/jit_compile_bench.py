"""JIT compile-side timings, no GPU needed: cold compile (empty cache), disk hit (new memory
cache, warm disk), memory hit (by key, and by source). Each cold sample compiles a new source
(a different comment), so every sample misses.

    PYTHONPATH=python python bench/jit_compile_bench.py [--repeats 7] [--arch sm_90a ...]
"""
import argparse
import json
import atexit
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# The cache folder is chosen at first use: point it at an empty temp folder first.
os.environ["AE_CACHE_DIR"] = tempfile.mkdtemp(prefix="ae_jit_bench_")
os.environ.pop("AE_DISABLE_DISK_CACHE", None)
atexit.register(shutil.rmtree, os.environ["AE_CACHE_DIR"], ignore_errors=True)

import torch  # noqa: E402,F401  (loads libtorch before the extension)
from attention_engine import _C  # noqa: E402

SMALL = '''#include "common/ae_common.h"
// variant {i}
extern "C" __global__ void ae_saxpy(ae::f32* y, const ae::f32* x, ae::f32 a, ae::i32 n) {{
  ae::i32 i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}}
'''

WGMMA = '''#include "common/ae_common.h"
// variant {i}
extern "C" __global__ void __launch_bounds__(128) ae_wgmma(ae::f32* out, const ae::u32* a,
                                                           ae::u64 desc) {{
#if AE_NVIDIA && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  ae::f32 d0 = 0.f, d1 = 0.f, d2 = 0.f, d3 = 0.f;
  asm volatile("wgmma.fence.sync.aligned;\\n" ::: "memory");
  asm volatile("{{\\nwgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 "
               "{{%0, %1, %2, %3}}, {{%4, %5, %6, %7}}, %8, 1, 1, 1, 1;\\n}}\\n"
               : "+f"(d0), "+f"(d1), "+f"(d2), "+f"(d3)
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc));
  asm volatile("wgmma.commit_group.sync.aligned;\\n" ::: "memory");
  asm volatile("wgmma.wait_group.sync.aligned 0;\\n" ::: "memory");
  out[threadIdx.x * 4 + 0] = d0; out[threadIdx.x * 4 + 1] = d1;
  out[threadIdx.x * 4 + 2] = d2; out[threadIdx.x * 4 + 3] = d3;
#else
  out[threadIdx.x] = 0.f;
#endif
}}
'''


def timed(fn):
    t = time.perf_counter()
    value = fn()
    return time.perf_counter() - t, value


def bench(name, template, kernel, arch, repeats):
    first = None
    cold, disk = [], []
    kernels = []
    for i in range(repeats):
        src = template.format(i=f"{name}-{arch}-{i}-{time.time_ns()}")
        seconds, k = timed(lambda: _C.jit_compile(src, kernel, arch, threads=128))
        assert not k.from_disk
        (cold if first is not None else []).append(seconds)
        first = seconds if first is None else first
        kernels.append((src, k))
    _C.jit_clear_memory_cache()  # a new process, as far as the memory cache goes
    for src, _ in kernels:
        seconds, k = timed(lambda: _C.jit_compile(src, kernel, arch, threads=128))
        assert k.from_disk, "expected a disk hit"
        disk.append(seconds)
    src, k = kernels[-1]
    n = 20000
    t = time.perf_counter()
    for _ in range(n):
        _C.jit_find(k.key)
    by_key = (time.perf_counter() - t) / n
    by_source = statistics.median(timed(lambda: _C.jit_compile(src, kernel, arch, threads=128))[0]
                                  for _ in range(200))
    new_process = statistics.median(disk_hit_in_new_process(src, kernel, arch) for _ in range(3))
    return {
        "new_process": new_process,
        "name": f"{name} {arch}", "first": first, "cold": statistics.median(cold),
        "disk": statistics.median(disk), "by_key": by_key, "by_source": by_source,
        "regs": k.registers, "size": len(k.binary),
    }


CHILD = """
import json, sys, time, torch
from attention_engine import _C
src, kernel, arch = json.loads(sys.argv[1])
t = time.perf_counter()
k = _C.jit_compile(src, kernel, arch, threads=128)
print(json.dumps([time.perf_counter() - t, k.from_disk]))
"""


def disk_hit_in_new_process(src, kernel, arch):
    """The first lookup of a new process: opens the compiler library (its version is part of
    the key), reads the entry. Python and torch start-up are not counted."""
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps([src, kernel, arch])],
                         capture_output=True, text=True, check=True).stdout
    seconds, from_disk = json.loads(out)
    assert from_disk
    return seconds


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--arch", nargs="*", default=["sm_80", "sm_90a", "gfx90a"])
    args = p.parse_args()
    print(f"cache: {_C.jit_cache_dir()}")
    rows = []
    for arch in args.arch:
        rows.append(bench("small", SMALL, "ae_saxpy", arch, args.repeats))
        if arch.startswith("sm_9"):
            rows.append(bench("wgmma", WGMMA, "ae_wgmma", arch, args.repeats))
    for arch in args.arch:
        print(f"{arch}: {_C.jit_compiler_version(arch)}")
    print(f"\n{'kernel':<14}{'1st compile':>12}{'cold':>10}{'disk hit':>10}{'new proc':>10}"
          f"{'mem/key':>10}{'mem/src':>10}{'regs':>6}{'bytes':>8}")
    for r in rows:
        print(f"{r['name']:<14}{r['first'] * 1e3:>10.1f}ms{r['cold'] * 1e3:>8.1f}ms"
              f"{r['disk'] * 1e3:>8.2f}ms{r['new_process'] * 1e3:>8.2f}ms"
              f"{r['by_key'] * 1e6:>8.2f}us{r['by_source'] * 1e6:>8.1f}us"
              f"{r['regs']:>6}{r['size']:>8}")
    print("\n1st compile: the process's first compile for that arch (loads the compiler);"
          f"\ncold / disk hit: medians over {args.repeats - 1} / {args.repeats} new sources;"
          "\nnew proc: disk hit as a new process's first compile call (median of 3);"
          "\nmem/key: _C.jit_find(key); mem/src: _C.jit_compile of a source already in memory.")
    print(_C.jit_stats())
    return 0


if __name__ == "__main__":
    sys.exit(main())
