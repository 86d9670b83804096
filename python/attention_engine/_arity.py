"""How many positional arguments a user's function takes, for the clear TypeErrors of
compile, Normalizer and compile_linear (before tracing, which would fail less clearly)."""
from __future__ import annotations

import inspect
from typing import Callable, Optional


def signature(fn: Callable) -> Optional[inspect.Signature]:
    """fn's signature, or None where Python cannot tell (a builtin: the trace will)."""
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def takes(sig: inspect.Signature, count: int) -> bool:
    """Whether a function of this signature can be called with `count` positional arguments."""
    try:
        sig.bind(*range(count))
        return True
    except TypeError:
        return False
