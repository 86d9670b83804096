"""The methods bench/attention_bench.py times side by side.

A Method turns a Problem (one variant at one size) into a function f(q, k, v) -> out, or
raises Unsupported when it cannot express the variant (the table shows "-"). `context`
wraps the timed region (SDPA's backend choice).
"""
from __future__ import annotations

import contextlib
import importlib.util
import math
from dataclasses import dataclass
from typing import Callable, ContextManager, Optional

import torch
import torch.nn.functional as F


class Unsupported(Exception):
    """The method cannot express this variant."""


@dataclass
class Problem:
    """One variant at one size: what every method computes (q, k, v: [B, H, S, D])."""
    variant: str
    B: int
    H: int
    S: int
    D: int
    score_mod: Optional[Callable] = None
    mask_mod: Optional[Callable] = None
    normalize: str = "softmax"
    sdpa_causal: Optional[bool] = None  # plain (False) / causal (True); None: not SDPA's
    kept: float = 1.0                   # fraction of the S x S scores that count as FLOPs
    params: tuple = ()                  # captured tensors that get gradients
    device: str = "cuda"


@dataclass
class Method:
    name: str
    build: Callable[[Problem], Callable]
    context: Callable[[], ContextManager] = contextlib.nullcontext


def raise_compile_limits() -> None:
    """torch.compile recompiles flex_attention / the eager formula for every shape and mod:
    keep it from giving up (and falling back to eager) after the default 8."""
    import torch._dynamo
    cfg = torch._dynamo.config
    cfg.cache_size_limit = max(cfg.cache_size_limit, 512)
    if hasattr(cfg, "accumulated_cache_size_limit"):
        cfg.accumulated_cache_size_limit = max(cfg.accumulated_cache_size_limit, 4096)


# -- attention_engine ----------------------------------------------------------------------------

def attention_engine_method(ae) -> Method:
    """ae.compile(...): the CompiledAttention is the function (it has backend_for)."""
    def build(p: Problem):
        return ae.compile(p.score_mod, p.mask_mod, normalize=p.normalize)
    return Method("attention_engine", build)


# -- SDPA ----------------------------------------------------------------------------------------

def sdpa_method(name: str, backend_name: str) -> Method:
    """F.scaled_dot_product_attention restricted to one backend (plain and causal only)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    backend = getattr(SDPBackend, backend_name)

    def build(p: Problem):
        if p.sdpa_causal is None:
            raise Unsupported(f"{name} has no {p.variant}")
        causal = p.sdpa_causal
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return Method(name, build, context=lambda: sdpa_kernel(backend))


# -- FlexAttention -------------------------------------------------------------------------------

def _imports(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def flex_method(compile_fn: Callable, backend: Optional[str] = None) -> Method:
    """torch.nn.attention.flex_attention under torch.compile; masks as block masks. backend
    "FLASH": its FlashAttention-4 backend (kernel_options BACKEND), where flash_attn.cute
    imports (bench/fa4_pack.sh brings it to the GPU machine)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    flex = compile_fn(flex_attention)
    options = None if backend is None else {"BACKEND": backend}

    def build(p: Problem):
        if p.normalize != "softmax":
            raise Unsupported("FlexAttention always normalizes with softmax")
        if backend == "FLASH" and not _imports("flash_attn.cute"):
            raise Unsupported("FlashAttention-4 (flash_attn.cute) does not import")
        block_mask = None
        if p.mask_mod is not None:
            block_mask = create_block_mask(p.mask_mod, None, None, p.S, p.S, device=p.device)
        score_mod = p.score_mod
        return lambda q, k, v: flex(q, k, v, score_mod=score_mod, block_mask=block_mask,
                                    kernel_options=options)
    return Method("flex" if backend is None else "flex-fa4", build)


# -- torch.compile of the eager formula ------------------------------------------------------------

def eager_attention(q, k, v, score_mod=None, mask_mod=None, normalize="softmax"):
    """Attention as plain PyTorch ops on the materialized S x S scores."""
    B, H, S, D = q.shape
    Skv = k.shape[2]
    s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(D))
    dev = q.device
    b = torch.arange(B, device=dev).view(B, 1, 1, 1)
    h = torch.arange(H, device=dev).view(1, H, 1, 1)
    qi = torch.arange(S, device=dev).view(1, 1, S, 1)
    ki = torch.arange(Skv, device=dev).view(1, 1, 1, Skv)
    if score_mod is not None:
        s = score_mod(s, b, h, qi, ki).to(q.dtype)
    keep = None if mask_mod is None else mask_mod(b, h, qi, ki)
    if normalize == "none":
        p = s if keep is None else torch.where(keep, s, torch.zeros((), dtype=s.dtype, device=dev))
    else:
        if keep is not None:
            s = s.masked_fill(~keep, float("-inf"))
        p = torch.softmax(s, dim=-1, dtype=torch.float32).to(q.dtype)
    return p @ v


def compiled_eager_method(compile_fn: Callable) -> Method:
    """torch.compile of eager_attention: the baseline for what FlexAttention cannot express
    (normalize="none": sigmoid, ReLU^2)."""
    def build(p: Problem):
        if p.normalize == "softmax":
            raise Unsupported("only run where FlexAttention cannot express the variant")
        score_mod, mask_mod, normalize = p.score_mod, p.mask_mod, p.normalize

        def formula(q, k, v):
            return eager_attention(q, k, v, score_mod, mask_mod, normalize)
        return compile_fn(formula)
    return Method("compiled", build)


def all_methods(ae, compile_fn: Callable) -> list:
    """The methods in table order; attention_engine first when it imported."""
    methods = [] if ae is None else [attention_engine_method(ae)]
    return methods + [sdpa_method("sdpa-flash", "FLASH_ATTENTION"),
                      sdpa_method("sdpa-cudnn", "CUDNN_ATTENTION"),
                      flex_method(compile_fn), flex_method(compile_fn, "FLASH"),
                      compiled_eager_method(compile_fn)]


def timed_ms(fn: Callable, q, k, v, do, backward: bool) -> Optional[float]:
    """Median ms of fn(q, k, v) (with backward: and its gradients for do) by triton's do_bench
    (CUDA events); None where it runs out of memory."""
    import triton.testing as tt

    def run():
        if backward:
            torch.autograd.grad(fn(q, k, v), (q, k, v), do)
        else:
            with torch.no_grad():
                fn(q, k, v)
    try:
        return tt.do_bench(run, warmup=10, rep=100, return_mode="median")
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None
