"""Runs the sm90 forward for plain softmax and softcap (B=1, H=16, S=16k, D=128, bf16), once
each, for Nsight Compute. On the GPU machine (Firecracker: counters readable):

    python bench/profile_fwd.py   # first: compiles into the disk cache
    ncu --clock-control none -k regex:ae_fwd --section SpeedOfLight \
        --section ComputeWorkloadAnalysis --section WarpStateStats python bench/profile_fwd.py
"""
import torch

import attention_engine as ae
from attention_engine import mods

torch.manual_seed(0)
q, k, v = (torch.randn(1, 16, 16384, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
for name, attn in (("plain", ae.compile()), ("softcap", ae.compile(mods.softcap(30.0)))):
    assert attn.backend_for(q, k, v) == "sm90"
    attn(q, k, v)
    torch.cuda.synchronize()
    print(name, "ran", flush=True)
