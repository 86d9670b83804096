"""ae.Attention: the compiled op as an nn.Module."""
from typing import Callable, Optional

import torch

from .api import compile


class Attention(torch.nn.Module):
    """``Attention(score_mod, mask_mod, normalize, scale)(q, k, v)``: a compiled attention
    variant as a module. The mods are traced here, at construction, so forward is a plain
    op call that torch.compile traces without a graph break. Tensors the mods capture (for
    example parameters of the enclosing module) get gradients when they require grad."""

    def __init__(self, score_mod: Optional[Callable] = None, mask_mod: Optional[Callable] = None,
                 normalize: str = "softmax", scale: Optional[float] = None):
        super().__init__()
        self._spec = (score_mod, mask_mod, normalize, scale)
        self.compiled = compile(score_mod, mask_mod, normalize, scale)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                return_lse: bool = False):
        return self.compiled(q, k, v, return_lse=return_lse)

    def extra_repr(self) -> str:
        score_mod, mask_mod, normalize, scale = self._spec
        name = lambda f: getattr(f, "__name__", repr(f)) if f is not None else None  # noqa: E731
        return (f"score_mod={name(score_mod)}, mask_mod={name(mask_mod)}, "
                f"normalize={normalize!r}, scale={scale}")
