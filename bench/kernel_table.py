"""torch.profiler's table of the CUDA kernels a few calls launch (bench scripts' --profile), and
optionally of the host's work (the ops by their own CPU time: where a short call's time goes
when the GPU waits for the host)."""
import contextlib
import cProfile
import io
import pstats

import torch


def profile_calls(call, n: int = 3, grad: bool = False, rows: int = 8, cpu: bool = False) -> None:
    """The kernels of n calls, by total CUDA time (grad: with autograd on, for a backward);
    cpu: then the ops by self CPU time."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CUDA] + ([ProfilerActivity.CPU] if cpu else [])
    with (contextlib.nullcontext() if grad else torch.no_grad()), profile(activities=acts) as prof:
        for _ in range(n):
            call()
        torch.cuda.synchronize()
    print(f"{n} calls:")
    table = prof.key_averages()
    print(table.table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=60))
    if cpu:
        print(f"{n} calls, the host's ops by self CPU time:")
        print(table.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60))


def python_profile(call, n: int = 20, rows: int = 25) -> None:
    """The Python functions n calls spend their host time in (cProfile, by own time and by
    cumulative time): what torch.profiler's op table cannot name (argument checks, plan
    lookups, wrappers)."""
    call()
    torch.cuda.synchronize()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        call()
    prof.disable()
    torch.cuda.synchronize()
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(rows)
        print(f"{n} calls, Python by {key}:")
        print("\n".join(l for l in buf.getvalue().splitlines() if l.strip())[:6000])
