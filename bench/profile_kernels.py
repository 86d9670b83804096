"""Runs attention kernels once each (B=16384/S, H=16, S=16k or argv[2], D=128, bf16) for
Nsight Compute:
the sm90 forward (plain, softcap), the backward (argv[3]: head dim, argv[4] "causal") (plain; on Hopper the sm90 one, with
AE_DISABLE_SM90_BWD=1 the sm80 one), and SDPA flash's backward (FlashAttention-2) as the
yardstick. On the GPU machine (Firecracker: counters readable):

    python bench/profile_kernels.py fwd90        # first: compiles into the disk cache
    ncu --clock-control none -k regex:ae_fwd --section SpeedOfLight \
        --section ComputeWorkloadAnalysis --section WarpStateStats \
        python bench/profile_kernels.py fwd90
    ncu ... -k regex:"ae_bwd$|flash_bwd_dq_dk_dv" python bench/profile_kernels.py bwd [4096]
    python bench/profile_kernels.py docmask      # the document mask's forward
    python bench/profile_kernels.py sparse 32768 # dense causal, then block-sparse (random
                                                 # 64-blocks, 10% kept: sparse_bench's)
    python bench/profile_kernels.py linear 4096 [128 gla]  # retention and GLA (or one),
                                                 # forward + backward
    python bench/profile_kernels.py vsfa4 8192 128 [causal]  # ours and FlashAttention-4's
                                                 # fwd and bwd (bench/fa4.py must import)
"""
import sys

import torch
import torch.nn.functional as F

import attention_engine as ae
from attention_engine import mods

what = sys.argv[1] if len(sys.argv) > 1 else "fwd90"
S = int(sys.argv[2]) if len(sys.argv) > 2 else 16384
D = int(sys.argv[3]) if len(sys.argv) > 3 else 128
causal = len(sys.argv) > 4 and sys.argv[4] == "causal"
torch.manual_seed(0)
q, k, v = (torch.randn(max(1, 16384 // S), 16, S, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
           for _ in range(3))
do = torch.randn_like(q)
if what == "fwd90":
    for name, attn in (("plain", ae.compile()), ("softcap", ae.compile(mods.softcap(30.0)))):
        assert attn.backend_for(q, k, v) == "sm90"
        attn(q, k, v)
        torch.cuda.synchronize()
        print(name, "ran", flush=True)
elif what == "docmask":  # the document mask's forward (causal within ~1k-token documents)
    from attention_bench import doc_lengths
    lengths = doc_lengths(S)
    ids = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    attn = ae.compile(mask_mod=mods.document_mask(ids.to(torch.int32).cuda()))
    assert attn.backend_for(q, k, v) == "sm90"
    with torch.no_grad():
        attn(q, k, v)
    torch.cuda.synchronize()
    print("document ran", flush=True)
elif what == "sparse":  # forwards: dense causal, then 10% of the causal 64-blocks (B 1, H 32)
    from sparse_bench import random_blocks
    q, k, v = (torch.randn(1, 32, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    blocks = random_blocks(32, S // 64, 0.1, torch.Generator(device="cuda").manual_seed(0))
    sparse = ae.seer.BlockSparseAttention(mask_mod=mods.causal, block_size=64)
    with torch.no_grad():
        ae.compile(mask_mod=mods.causal)(q, k, v)
        sparse(q, k, v, blocks)
    torch.cuda.synchronize()
    print("sparse ran", flush=True)
elif what == "linear":  # retention, then GLA: forward + backward (B 16k/S, H 16, D 128)
    B = max(1, 16384 // S)
    only = sys.argv[4] if len(sys.argv) > 4 else None  # "retention" or "gla": that one alone
    for name, lin, g in (("retention", ae.linear.retention(16), None),
                         ("gla", ae.linear.gla(),
                          torch.nn.functional.logsigmoid(torch.randn(B, 16, S, D, device="cuda")) / 16)):
        if only and name != only:
            continue
        qs, ks, vs = ((torch.randn(B, 16, S, D, device="cuda") * 0.5).to(torch.bfloat16).requires_grad_()
                      for _ in range(3))
        lin(qs, ks, vs, g).float().sum().backward()
        torch.cuda.synchronize()
        print(name, "ran", flush=True)
elif what == "bwd":
    out = (ae.compile(mask_mod=mods.causal) if causal else ae.compile())(q, k, v)
    torch.autograd.grad(out, (q, k, v), do)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        torch.autograd.grad(out, (q, k, v), do)
    torch.cuda.synchronize()
    print("bwd ran", flush=True)
elif what == "vsfa4":  # ours and FlashAttention-4's forward and backward, same shape
    from fa4 import fa4, why
    assert fa4 is not None, why
    attn = ae.compile(mask_mod=mods.causal) if causal else ae.compile()
    assert attn.backend_for(q, k, v) == "sm90" and attn.backend_for(q, k, v, backward=True) == "sm90"
    torch.autograd.grad(attn(q, k, v), (q, k, v), do)
    q4, k4, v4, do4 = (t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v, do))
    torch.autograd.grad(fa4(q4, k4, v4, causal=causal), (q4, k4, v4), do4)
    torch.cuda.synchronize()
    print("vsfa4 ran", flush=True)
else:
    sys.exit(f"unknown case {what}: fwd90, docmask, sparse, linear, bwd or vsfa4")
