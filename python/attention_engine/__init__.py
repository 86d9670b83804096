"""attention_engine: attention variants written in Python, compiled into fused GPU kernels.

    attn = attention_engine.compile(score_mod=..., mask_mod=..., normalize="softmax")
    out = attn(q, k, v)
"""
import torch  # noqa: F401  (loads libtorch before the extension)

from . import _C
from . import mods
from . import ops as _ops  # noqa: F401  (registers autograd for the native ops)
from .api import CompiledAttention, compile
from .errors import GraphError, TraceError
from .flex import BlockMask, create_block_mask, flex_attention
from .module import Attention

__version__ = _C.__version__

__all__ = ["compile", "CompiledAttention", "Attention", "flex_attention", "create_block_mask",
           "BlockMask", "mods", "GraphError", "TraceError", "__version__"]
