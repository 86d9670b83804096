"""attention_engine: attention variants written in Python, compiled into fused GPU kernels.

    attn = attention_engine.compile(score_mod=..., mask_mod=..., normalize="softmax")
    out = attn(q, k, v)
"""
import os as _os

import torch  # noqa: F401  (loads libtorch before the extension)

from . import _C

# NVRTC shipped in PyTorch's wheels: where the JIT looks after the system's libnvrtc.
_site = _os.path.dirname(_os.path.dirname(torch.__file__))
for _sub in ("nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib"):
    if _os.path.isdir(_os.path.join(_site, _sub)):
        _C.add_library_search_path(_os.path.join(_site, _sub))
from . import _progress
_C.tune_set_progress(_progress.report)  # the autotuner's bar (only shown while it tunes)
from . import mods
from . import normalizers
from .normalizers import Normalizer
from . import ops as _ops  # noqa: F401  (registers autograd for the native ops)
from .api import CompiledAttention, clear_kernel_caches, compile
from .errors import GraphError, TraceError
from .flex import (AuxOutput, AuxRequest, BlockMask, create_block_mask, create_mask,
                   flex_attention)
from .module import Attention
from .context_parallel import context_parallel, sequence_positions, shard_sequence
from . import seer
from . import linear
from .linear import LinearAttention, compile_linear
from torch.nn.attention.flex_attention import and_masks, noop_mask, or_masks  # noqa: E402

__version__ = _C.__version__

__all__ = ["compile", "CompiledAttention", "clear_kernel_caches", "Attention", "flex_attention",
           "create_block_mask", "create_mask", "BlockMask", "AuxRequest", "AuxOutput",
           "and_masks", "or_masks", "noop_mask", "mods", "normalizers", "Normalizer", "seer", "linear", "compile_linear", "LinearAttention", "GraphError", "TraceError",
           "context_parallel", "shard_sequence", "sequence_positions", "__version__"]
