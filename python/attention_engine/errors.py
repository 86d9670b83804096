"""The exceptions a user sees. Both are ValueErrors: a definition that cannot be compiled."""
from ._C import GraphError  # raised by the C++ core (validation, types); a ValueError


class TraceError(ValueError):
    """A score_mod / mask_mod does something the tracer cannot record."""


__all__ = ["GraphError", "TraceError"]
