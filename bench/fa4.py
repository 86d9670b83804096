"""FlashAttention-4 (`flash_attn.cute`, the speed bar of issue 17) as a same-run baseline, where
it imports: on the GPU machine it is brought by bench/fa4_pack.sh / fa4_unpack.sh (not on the
machine's package index). `fa4` is None elsewhere, and `why` says why.
"""
from __future__ import annotations

try:
    from flash_attn.cute import flash_attn_func as _func
    why = ""
except Exception as e:  # noqa: BLE001
    _func = None
    why = f"{type(e).__name__}: {str(e)[:80]}"


def _fa4(q, k, v, causal: bool = False, softcap: float = 0.0):
    """q, k, v [B, S, H, D] (FlashAttention's layout) -> out [B, S, H, D]."""
    r = _func(q, k, v, causal=causal, softcap=softcap)
    return r[0] if isinstance(r, tuple) else r


fa4 = _fa4 if _func is not None else None
