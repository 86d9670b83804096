"""torch.profiler's table of the CUDA kernels a few calls launch (bench scripts' --profile)."""
import contextlib

import torch


def profile_calls(call, n: int = 3, grad: bool = False, rows: int = 8) -> None:
    """The kernels of n calls, by total CUDA time (grad: with autograd on, for a backward)."""
    from torch.profiler import ProfilerActivity, profile
    with (contextlib.nullcontext() if grad else torch.no_grad()), \
            profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            call()
        torch.cuda.synchronize()
    print(f"{n} calls:")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows,
                                    max_name_column_width=60))
