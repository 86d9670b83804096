"""Attention throughput: attention_engine next to SDPA (flash, cuDNN), FlexAttention under
torch.compile, and torch.compile of the eager formula where FlexAttention cannot express the
variant. FlashAttention's conventions: bf16, 16k tokens per batch (B * S = 16384), hidden 2048
(H = 2048 / D); FLOPs fwd = 4 B H S^2 D times the kept fraction (causal: 1/2, window and
document masks: what they keep), fwd+bwd = 3.5 x fwd. Also, per attention_engine kernel, the
cold compile (empty AE_CACHE_DIR) and the disk-cache hit (after ae.clear_kernel_caches()).

    PYTHONPATH=python python bench/attention_bench.py [--quick | --full] [--out FILE.md]
                                                       (--out: FILE.svg, the plot, beside it)
    PYTHONPATH=python python bench/attention_bench.py --dry-run     # CPU, tiny, plumbing only

--quick (the default): S in {4k, 16k}, D 128, plain and causal, and five variants at S=4k.
--full: S in 512 .. 16k, D 64 and 128, plain and causal, and seven variants at S=8k.
A method that cannot express a variant shows "-", one that failed (no kernel for the shape,
out of memory, ...) "n/a" with the reason listed. The compact table is printed last.
"""
from __future__ import annotations

import argparse
import atexit
import datetime
import functools
import gc
import importlib.util
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

# The kernel cache folder is chosen at first use: an empty one, so the first calls compile.
os.environ["AE_CACHE_DIR"] = tempfile.mkdtemp(prefix="ae_attention_bench_")
os.environ.pop("AE_DISABLE_DISK_CACHE", None)
atexit.register(shutil.rmtree, os.environ["AE_CACHE_DIR"], ignore_errors=True)

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baselines import Problem, Unsupported, all_methods, raise_compile_limits  # noqa: E402
from plot_bench import write_plot  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTES: list = []  # why each n/a happened, printed before the tables


def import_engine():
    """(attention_engine or None, its mods module). When the extension does not import, the
    baselines still run: mods.py needs torch only."""
    try:
        import attention_engine as ae
        return ae, ae.mods
    except Exception as e:  # noqa: BLE001  (a broken build must not stop the baselines)
        NOTES.append(f"attention_engine did not import: {short(e)}")
        path = os.path.join(REPO, "python", "attention_engine", "mods.py")
        spec = importlib.util.spec_from_file_location("ae_mods_standalone", path)
        mods = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mods  # torch.compile re-imports the mods' module by name
        spec.loader.exec_module(mods)
        return None, mods


def short(e: BaseException, n: int = 160) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text[:n]}"


# ---------------------------------------------------------------------------------------------
# Cases and variants
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    variant: str
    S: int
    D: int


@dataclass(frozen=True)
class Sizes:
    tokens: int = 16384
    hidden: int = 2048


def base_cases(seqlens, head_dims):
    return [Case(v, S, D) for D in head_dims for v in ("plain", "causal") for S in seqlens]


QUICK_VARIANTS = ["alibi", "softcap", "sliding_window", "document", "sigmoid"]
FULL_VARIANTS = ["alibi", "softcap", "relative_bias", "sliding_window", "document", "sigmoid",
                 "relu_squared"]


def cases_for(mode: str, variant_seqlen: Optional[int] = None):
    if mode == "quick":
        S = variant_seqlen or 4096
        return base_cases([4096, 16384], [128]) + [Case(v, S, 128) for v in QUICK_VARIANTS]
    if mode == "full":
        S = variant_seqlen or 8192
        return (base_cases([512, 1024, 2048, 4096, 8192, 16384], [64, 128])
                + [Case(v, S, 128) for v in FULL_VARIANTS])
    # dry run: tiny and on the CPU
    return base_cases([128, 256], [64]) + [Case(v, 256, 64) for v in FULL_VARIANTS]


WINDOW = 1024
SOFTCAP = 50.0
MAX_DISTANCE = 128


def window_kept(S: int, w: int) -> float:
    """Fraction of S x S kept by causal attention to the last w keys: row q keeps min(q, w) + 1."""
    full = max(S - w - 1, 0)  # rows q > w keep w + 1
    partial = min(S, w + 1)   # rows q <= w keep q + 1
    return (partial * (partial + 1) / 2 + full * (w + 1)) / (S * S)


def doc_lengths(S: int, seed: int = 0) -> list:
    """Random document lengths summing to S, about 1k tokens each."""
    n_docs = max(1, S // 1024)
    gen = torch.Generator().manual_seed(seed)
    cuts = sorted((torch.randperm(S - 1, generator=gen)[:n_docs - 1] + 1).tolist())
    bounds = [0] + cuts + [S]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def make_problem(case: Case, sizes: Sizes, mods, device: str) -> Problem:
    """The variant's mods (with their captured tensors) at the case's size."""
    S, D = case.S, case.D
    B, H = max(1, sizes.tokens // S), max(1, sizes.hidden // D)
    p = Problem(case.variant, B, H, S, D, device=device)
    v = case.variant
    if v == "plain":
        p.sdpa_causal = False
    elif v == "causal":
        p.mask_mod, p.sdpa_causal, p.kept = mods.causal, True, 0.5
    elif v == "alibi":
        p.score_mod = mods.alibi(mods.alibi_slopes(H, device=device))
        p.mask_mod, p.kept = mods.causal, 0.5
    elif v == "softcap":
        p.score_mod, p.mask_mod, p.kept = mods.softcap(SOFTCAP), mods.causal, 0.5
    elif v == "relative_bias":
        table = (0.1 * torch.randn(H, 2 * MAX_DISTANCE + 1, device=device)).requires_grad_()
        p.score_mod, p.params = mods.relative_bias(table, MAX_DISTANCE), (table,)
    elif v == "sliding_window":
        p.mask_mod, p.kept = mods.sliding_window(WINDOW), window_kept(S, WINDOW)
    elif v == "document":
        lengths = doc_lengths(S)
        ids = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
        p.mask_mod = mods.document_mask(ids.to(torch.int32).to(device))
        p.kept = sum(n * (n + 1) / 2 for n in lengths) / (S * S)
    elif v == "sigmoid":
        p.score_mod, p.mask_mod = mods.sigmoid(-math.log(S)), mods.causal
        p.normalize, p.kept = "none", 0.5
    elif v == "relu_squared":
        p.score_mod, p.mask_mod = mods.relu_squared, mods.causal
        p.normalize, p.kept = "none", 0.5
    else:
        raise ValueError(f"unknown variant {v}")
    return p


def case_label(p: Problem) -> str:
    s = f"{p.S // 1024}k" if p.S >= 1024 else str(p.S)
    return f"{p.variant} S{s} D{p.D}"


def fwd_flops(p: Problem) -> float:
    return 4.0 * p.B * p.H * p.S * p.S * p.D * p.kept


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------

def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def wall_ms(fn: Callable, device: str):
    """(milliseconds, result) of one call, device work included."""
    sync(device)
    t = time.perf_counter()
    result = fn()
    sync(device)
    return (time.perf_counter() - t) * 1e3, result


def make_timer(device: str, warmup_ms: int, rep_ms: int) -> Callable[[Callable], float]:
    """Median milliseconds of fn(): triton's do_bench on the GPU (L2 flushed between
    calls), a wall clock on the CPU (dry run)."""
    if device == "cuda":
        from triton.testing import do_bench

        return lambda fn: do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")

    def cpu_timer(fn):
        fn()
        return statistics.median(wall_ms(fn, device)[0] for _ in range(3))
    return cpu_timer


def free_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# Measuring one case
# ---------------------------------------------------------------------------------------------

@dataclass
class Inputs:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    dout: torch.Tensor
    params: tuple

    @property
    def grad_inputs(self):
        return (self.q, self.k, self.v) + self.params


def make_inputs(p: Problem, dtype: torch.dtype, seed: int) -> Inputs:
    """Fresh random inputs for one case (never zeros), shared by every method."""
    gen = torch.Generator(device=p.device).manual_seed(seed)

    def rand(*shape, grad=True):
        x = torch.randn(*shape, generator=gen, device=p.device, dtype=dtype)
        return x.requires_grad_(grad)
    q, k, v = (rand(p.B, p.H, p.S, p.D) for _ in range(3))
    return Inputs(q, k, v, rand(p.B, p.H, p.S, p.D, grad=False), p.params)


@dataclass
class Timing:
    method: str
    status: str = ""                    # "" ran, "-" cannot express, "n/a" failed
    backend: str = ""
    warmup_s: Optional[float] = None    # first fwd + first fwd+bwd call: compiles included
    fwd_ms: Optional[float] = None
    fb_ms: Optional[float] = None
    diff: Optional[float] = None        # max |out - out of the first method that ran|


@dataclass
class CaseResult:
    problem: Problem
    timings: list = field(default_factory=list)


def attempt(label: str, fn: Callable, device: str):
    """fn() or None; a failure is noted as n/a and its memory released."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001  (one failing baseline must not end the run)
        NOTES.append(f"{label}: n/a ({short(e)})")
        free_memory(device)
        return None


def backend_of(fn, x: Inputs) -> str:
    if hasattr(fn, "backend_for"):
        try:
            return fn.backend_for(x.q, x.k, x.v)
        except Exception as e:  # noqa: BLE001
            return f"? ({type(e).__name__})"
    return ""


def time_method(method, p: Problem, x: Inputs, timer, ref_out) -> tuple:
    """(Timing, forward output) for one method on one case."""
    t = Timing(method.name)
    label = f"{case_label(p)} {method.name}"
    try:
        fn = method.build(p)
    except Unsupported:
        t.status = "-"
        return t, None
    except Exception as e:  # noqa: BLE001
        NOTES.append(f"{label}: n/a ({short(e)})")
        t.status = "n/a"
        return t, None
    t.backend = backend_of(fn, x)

    def fwd():
        return fn(x.q, x.k, x.v)

    def fwd_bwd():
        return torch.autograd.grad(fn(x.q, x.k, x.v), x.grad_inputs, x.dout)

    with method.context():
        first = attempt(label + " fwd", lambda: wall_ms(fwd, p.device), p.device)
        if first is None:  # e.g. no backward for it: the forward alone, without autograd
            return time_forward_only(t, label, fn, x, p, timer, ref_out)
        out = first[1].detach()
        t.diff = max_diff(out, ref_out)
        t.fwd_ms = attempt(label + " fwd timing", lambda: timer(fwd), p.device)
        first_fb = attempt(label + " fwd+bwd", lambda: wall_ms(fwd_bwd, p.device), p.device)
        if first_fb is not None:
            t.warmup_s = (first[0] + first_fb[0]) / 1e3
            t.fb_ms = attempt(label + " fwd+bwd timing", lambda: timer(fwd_bwd), p.device)
    return t, out


def time_forward_only(t: Timing, label: str, fn, x: Inputs, p: Problem, timer,
                      ref_out) -> tuple:
    """Forward on detached inputs under torch.no_grad (fwd+bwd stays n/a), for a method
    whose forward with inputs requiring grad failed."""
    q, k, v = x.q.detach(), x.k.detach(), x.v.detach()

    def fwd_no_grad():
        with torch.no_grad():
            return fn(q, k, v)
    first = attempt(label + " fwd (no grad)", lambda: wall_ms(fwd_no_grad, p.device), p.device)
    if first is None:
        t.status = "n/a"
        return t, None
    out = first[1].detach()
    t.diff = max_diff(out, ref_out)
    t.warmup_s = first[0] / 1e3
    t.fwd_ms = attempt(label + " fwd (no grad) timing", lambda: timer(fwd_no_grad), p.device)
    NOTES.append(f"{label}: forward timed without autograd")
    return t, out


def max_diff(out: torch.Tensor, ref_out: Optional[torch.Tensor]) -> Optional[float]:
    return None if ref_out is None else (out.float() - ref_out.float()).abs().max().item()


def jit_counts(ae) -> dict:
    """The JIT cache's counters (compiles, disk_hits, ...), {} when not available."""
    stats = getattr(getattr(ae, "_C", None), "jit_stats", None)
    return dict(stats()) if stats else {}


def measure_compile(ae, p: Problem, x: Inputs) -> dict:
    """Milliseconds: ae.compile (trace + C++ build), first forward and backward with an
    empty cache (cold compile), again after ae.clear_kernel_caches() (disk hit), and a third
    time (memory hit: the calls' own run time). Also how many kernels the cold calls compiled
    and the disk-hit calls loaded, from the JIT's counters (a check that cold was cold)."""
    result = {}
    result["compile"], attn = wall_ms(
        lambda: ae.compile(p.score_mod, p.mask_mod, normalize=p.normalize), p.device)

    def fwd():
        return attn(x.q, x.k, x.v)

    def bwd(out):
        return torch.autograd.grad(out, x.grad_inputs, x.dout)

    clear = getattr(ae, "clear_kernel_caches", None)
    for phase in ("cold", "disk", "warm"):
        if phase == "disk" and clear is None:
            NOTES.append("no ae.clear_kernel_caches(): disk hits not measured")
            continue
        if phase == "disk":
            clear()
        before = jit_counts(ae)
        result[f"fwd {phase}"], out = wall_ms(fwd, p.device)
        result[f"bwd {phase}"], _ = wall_ms(lambda: bwd(out), p.device)
        after = jit_counts(ae)
        counter = {"cold": "compiles", "disk": "disk_hits"}.get(phase)
        if counter in after:
            result[counter] = after[counter] - before.get(counter, 0)
    return result


def run_case(p: Problem, methods, timer, dtype, seed) -> CaseResult:
    x = make_inputs(p, dtype, seed)
    result = CaseResult(p)
    ref_out = None
    for method in methods:
        timing, out = time_method(method, p, x, timer, ref_out)
        if ref_out is None and out is not None:
            ref_out = out
        result.timings.append(timing)
        free_memory(p.device)
    return result


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------

def fmt(value, spec: str, missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)


def tflops(flops: float, ms: Optional[float]) -> Optional[float]:
    return None if not ms else flops / (ms * 1e-3) / 1e12


def md_table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def detail_table(results: list) -> str:
    header = ["case", "B x H", "method", "backend", "warm-up s", "fwd ms", "fwd TFLOPS",
              "fwd+bwd ms", "fwd+bwd TFLOPS", "max abs diff vs first"]
    rows = []
    for r in results:
        p, flops = r.problem, fwd_flops(r.problem)
        for t in r.timings:
            if t.status == "-":
                continue
            rows.append([case_label(p), f"{p.B} x {p.H}", t.method, t.backend or "",
                         fmt(t.warmup_s, ".1f"), fmt(t.fwd_ms, ".3f"),
                         fmt(tflops(flops, t.fwd_ms), ".3g"), fmt(t.fb_ms, ".3f"),
                         fmt(tflops(3.5 * flops, t.fb_ms), ".3g"),
                         fmt(t.diff, ".1e", "n/a" if t.status else "ref")])
    return md_table(header, rows)


def compile_table(compiles: dict) -> str:
    """ms columns, then the JIT's counts: kernels compiled by the cold calls, loaded from
    disk by the disk-hit calls."""
    ms = ["compile", "fwd cold", "fwd disk", "fwd warm", "bwd cold", "bwd disk", "bwd warm"]
    counts = ["compiles", "disk_hits"]
    rows = [[name] + [fmt(None if r is None else r.get(k), ".1f") for k in ms]
            + [fmt(None if r is None else r.get(k), "d") for k in counts]
            for name, r in compiles.items()]
    return md_table(["variant"] + [k + " ms" for k in ms] + ["kernels compiled", "disk hits"],
                    rows)


def compact_table(results: list, methods: list) -> str:
    """TFLOPS "fwd / fwd+bwd" per case and method."""
    rows = []
    for r in results:
        flops = fwd_flops(r.problem)
        cells = {t.method: t for t in r.timings}
        row = [case_label(r.problem), f"{r.problem.kept:.2f}"]
        for m in methods:
            t = cells.get(m)
            if t is None or t.status:
                row.append(t.status if t else "")
            else:
                row.append(f"{fmt(tflops(flops, t.fwd_ms), '.3g')} / "
                           f"{fmt(tflops(3.5 * flops, t.fb_ms), '.3g')}")
        rows.append(row)
    return md_table(["case", "kept"] + methods, rows)


def environment(ae, device: str, dtype) -> str:
    gpu = torch.cuda.get_device_name() if device == "cuda" else "CPU (dry run)"
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    ae_version = getattr(ae, "__version__", "not imported")
    return (f"{datetime.date.today()}  {gpu}  torch {torch.__version__}  triton "
            f"{triton_version}  attention_engine {ae_version}  {str(dtype)[6:]}")


def report(results, compiles, methods, header) -> str:
    legend = ("TFLOPS fwd / fwd+bwd; FLOPs fwd = 4 B H S^2 D x kept, fwd+bwd = 3.5 x fwd; "
              "'-': cannot express, 'n/a': failed (see notes)")
    parts = [f"# attention benchmark\n\n{header}\n", "## details\n", detail_table(results),
             "\n## attention_engine compile times\n",
             compile_table(compiles) if compiles else "(none measured)"]
    if NOTES:
        parts += ["\n## notes\n", "\n".join(f"- {n}" for n in dict.fromkeys(NOTES))]
    parts += [f"\n## summary\n\n{legend}\n", compact_table(results, methods)]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="mode", const="quick",
                      help="S in {4k, 16k}, D 128, five variants (the default; ~4 min)")
    mode.add_argument("--full", action="store_const", dest="mode", const="full",
                      help="S 512 .. 16k, D 64 and 128, seven variants")
    mode.add_argument("--dry-run", action="store_const", dest="mode", const="dry",
                      help="tiny shapes on the CPU, no torch.compile: checks the plumbing")
    ap.add_argument("--out", help="also write the report (markdown) to this file, and its "
                    "plot (SVG) beside it")
    ap.add_argument("--methods", help="comma-separated subset of: attention_engine, "
                    "sdpa-flash, sdpa-cudnn, flex, flex-fa4 (FlexAttention on FlashAttention-4), compiled")
    ap.add_argument("--variants", help="comma-separated subset of the variants to run")
    ap.add_argument("--variant-seqlen", type=int,
                    help="sequence length of the variants' cases (default 4k quick, 8k full)")
    ap.add_argument("--time-limit", type=float, default=0,
                    help="start no new case after this many seconds (0: no limit)")
    ap.add_argument("--warmup-ms", type=int, default=25, help="do_bench warm-up")
    ap.add_argument("--rep-ms", type=int, default=100, help="do_bench measuring time")
    ap.set_defaults(mode="quick")
    return ap.parse_args(argv)


def select(items, wanted: Optional[str], key):
    if not wanted:
        return items
    names = set(wanted.split(","))
    return [i for i in items if key(i) in names]


def main(argv=None) -> int:
    args = parse_args(argv)
    dry = args.mode == "dry"
    if not dry and not torch.cuda.is_available():
        print("no CUDA GPU: use --dry-run for the CPU plumbing check")
        return 2
    device = "cpu" if dry else "cuda"
    dtype = torch.bfloat16
    sizes = Sizes(512, 128) if dry else Sizes()
    ae, mods = import_engine()
    # Static shapes: one specialized compile per shape, as FlexAttention's own benchmarks
    # (automatic dynamic shapes would reuse a slower dynamic kernel after the first change).
    compile_fn = (lambda f: f) if dry else functools.partial(torch.compile, dynamic=False)
    raise_compile_limits()
    methods = select(all_methods(ae, compile_fn), args.methods, lambda m: m.name)
    cases = select(cases_for(args.mode, args.variant_seqlen), args.variants, lambda c: c.variant)
    timer = make_timer(device, args.warmup_ms, args.rep_ms)
    header = environment(ae, device, dtype)
    print(header, flush=True)
    if device == "cuda":
        torch.ones(1, device=device) @ torch.ones(1, 1, device=device)  # context + cuBLAS

    results, compiles = [], {}
    start = time.perf_counter()
    for i, case in enumerate(cases):
        if args.time_limit and time.perf_counter() - start > args.time_limit:
            NOTES.append(f"time limit: {len(cases) - i} cases not run")
            break
        p = make_problem(case, sizes, mods, device)
        kernel = f"{case.variant} D{case.D}"
        if ae is not None and kernel not in compiles and any(
                m.name == "attention_engine" for m in methods):
            x = make_inputs(p, dtype, seed=1000 + i)
            compiles[kernel] = attempt(f"compile {kernel}", lambda: measure_compile(ae, p, x),
                                       device)
            del x
            free_memory(device)
        results.append(run_case(p, methods, timer, dtype, seed=i))
        print(f"[{time.perf_counter() - start:6.0f}s] {case_label(p)}: "
              + ", ".join(f"{t.method} {fmt(t.fwd_ms, '.2f', t.status or 'n/a')}/"
                          f"{fmt(t.fb_ms, '.2f', t.status or 'n/a')} ms"
                          for t in results[-1].timings), flush=True)
        write_report(args.out, results, compiles, methods, header)
    print("\n" + write_report(args.out, results, compiles, methods, header), flush=True)
    return 0


def write_report(path: Optional[str], results, compiles, methods, header) -> str:
    """The report's text; also written to `path` (after every case, so that a run cut short
    keeps what it measured), with its plot beside it (PATH without .md, plus .svg: TFLOPS
    against sequence length, one line per method, one panel per variant; bench/plot_bench.py)."""
    text = report(results, compiles, [m.name for m in methods], header)
    if path:
        with open(path, "w") as f:
            f.write(text)
        if results:
            write_plot(text, os.path.splitext(path)[0] + ".svg", "attention TFLOPS " + header)
    return text


if __name__ == "__main__":
    sys.exit(main())
