"""Torch ops on captured tensors inside a mod: recorded into the graph, never frozen.

``s * torch.exp(log_t)``, ``s + (w * 0.5)[h]`` and ``bias[0][h]`` call torch on plain tensors
while the mod is traced. Computed then, their results would be trace-time constants: in-place
updates of ``log_t`` would change nothing and gradients would flow into a graph that autograd
frees after the first backward. So while the mods run, _CaptureMode (a TorchFunctionMode) sees
every torch call and:

- records elementwise ops (the tracer's op table: arithmetic, comparisons, exp, tanh, where,
  clamp, casts, ...) and integer indexing of captured tensors as a TensorExpr: a lazy,
  broadcast-shaped expression whose leaves are captured tensors. Indexing it with the mod's
  arguments (or lifting a 0-d one into a traced expression) emits graph nodes: a load per leaf
  at the broadcast index, then the ops. So the values are read at every call and autodiff
  reaches the leaves;
- lets through what cannot freeze a value: attribute and shape queries (``w.shape``,
  ``w.dim()``), and calls on no tensor at all (``torch.tensor([...])`` builds a new constant);
- raises TraceError for anything else on a captured tensor (reductions, matmul, views by
  slices, ``.item()``, in-place updates), saying what to write instead.
"""
from __future__ import annotations

from typing import Callable, List, Sequence

import torch
from torch.overrides import TorchFunctionMode

from . import trace as _trace
from .errors import TraceError

_REVERSED = {"__radd__", "__rsub__", "__rmul__", "__rdiv__", "__rtruediv__", "__rfloordiv__",
             "__rmod__", "__rpow__", "__rand__", "__ror__", "__rxor__"}
_CASTS = {"float", "double", "half", "bfloat16", "int", "long", "bool", "to", "type"}
# Attributes that are other tensors (views, gradients): frozen at trace time.
_TENSOR_ATTRS = {"T", "mT", "H", "mH", "data", "real", "imag", "grad"}
# Calls that turn a tensor into a Python value: frozen at trace time.
_TO_PYTHON = {"__float__", "__int__", "__index__", "__bool__", "__complex__", "item", "tolist",
              "numpy", "__array__"}


def _elementwise() -> set:
    return (set(_trace._UNARY) | set(_trace._BINARY) | set(_trace._DUNDER) | _REVERSED
            | _trace._OTHER | _CASTS | {"__pos__"})


def _broadcast(shapes: Sequence[tuple]) -> tuple:
    """torch's broadcasting rule on plain int tuples (no torch call: the mode is active)."""
    rank = max((len(s) for s in shapes), default=0)
    out = [1] * rank
    for s in shapes:
        for i, n in enumerate(s):
            d = rank - len(s) + i
            if n != 1 and out[d] not in (1, n):
                raise TraceError(f"captured tensors of shapes {[list(x) for x in shapes]} do not "
                                 f"broadcast together, at {_trace._user_loc()}")
            if n != 1:
                out[d] = n
    return tuple(out)


def _aligned(indices: list, out_shape: tuple, in_shape: tuple) -> list:
    """The indices of an operand of shape in_shape for element `indices` of the broadcast
    result: right-aligned, 0 in the dims the operand broadcasts along."""
    lead = len(out_shape) - len(in_shape)
    return [0 if n == 1 and out_shape[lead + d] != 1 else indices[lead + d]
            for d, n in enumerate(in_shape)]


class TensorExpr:
    """An elementwise expression over captured tensors, recorded while a mod is traced.
    emit(indices) writes the graph nodes of one element and returns its Proxy."""

    def __init__(self, tracer, shape: tuple, emit: Callable[[list], object], what: str):
        self.tracer, self.shape, self._emit, self.what = tracer, tuple(shape), emit, what

    @classmethod
    def leaf(cls, tracer, tensor: torch.Tensor) -> "TensorExpr":
        def emit(indices):
            return tracer.load(tracer.buffer(tensor), len(indices), indices)
        name = tracer._names.get(id(tensor))
        return cls(tracer, tuple(tensor.shape), emit,
                   f"captured tensor '{name}'" if name else "captured tensor")

    def dim(self) -> int:
        return len(self.shape)

    def emit(self, indices: list):
        return self._emit(list(indices))

    def __getitem__(self, index):
        loc = _trace._user_loc()
        indices = _trace._as_list(index)
        if len(indices) > len(self.shape):
            raise TraceError(f"a {self.what} of shape {list(self.shape)} is indexed with "
                             f"{len(indices)} indices at {loc}")
        fixed: List[object] = []
        for d, i in enumerate(indices):
            if isinstance(i, slice) or i is None or i is Ellipsis:
                raise TraceError(f"captured tensors can only be indexed by integers and traced "
                                 f"indices, not slices, at {loc}")
            if isinstance(i, bool) or isinstance(i, float):
                raise TraceError(f"a {self.what} is indexed by a {type(i).__name__} at {loc}; "
                                 "indices must be integers")
            if isinstance(i, int):
                n = self.shape[d]
                if not -n <= i < n:
                    raise IndexError(f"index {i} is out of range for dim {d} (size {n}) of a "
                                     f"{self.what} of shape {list(self.shape)}, at {loc}")
                i = i + n if i < 0 else i
            elif isinstance(i, (torch.Tensor, TensorExpr)):
                if i.dim() != 0:
                    raise TraceError(f"a {self.what} is indexed by a tensor of shape "
                                     f"{list(i.shape)} at {loc}; index it with the mod's "
                                     "arguments")
                i = self.tracer.lift(i)
                i = _trace.Proxy(self.tracer, i)
            fixed.append(i)
        if len(fixed) == len(self.shape):
            return self.emit(fixed)
        return TensorExpr(self.tracer, self.shape[len(fixed):],
                          lambda rest: self.emit(fixed + rest), self.what)

    __hash__ = object.__hash__

    def __pos__(self):
        return self

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name in _elementwise():
            return lambda *args, **kwargs: _record(self.tracer, name, (self,) + args, kwargs)
        raise TraceError(f"unsupported operation '.{name}' on a {self.what} inside a mod, at "
                         f"{_trace._user_loc()}")

    def _to_python(self, *_):
        raise TraceError(
            f"a mod converts a {self.what} to a Python value at {_trace._user_loc()}; it would "
            "be frozen at trace time. Use torch.where and the traced ops instead")

    __bool__ = __float__ = __int__ = __index__ = _to_python

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        raise TraceError("an expression over captured tensors is used outside the mod that "
                         "made it")


def _operator(name: str):
    def method(self, *args):
        return _record(self.tracer, name, (self,) + args, {})
    method.__name__ = name
    return method


# Python operators on an expression record more of it (or, beside a traced value, lift it).
for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
              "__rtruediv__", "__floordiv__", "__rfloordiv__", "__mod__", "__rmod__", "__pow__",
              "__rpow__", "__and__", "__rand__", "__or__", "__ror__", "__xor__", "__rxor__",
              "__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__", "__neg__", "__abs__",
              "__invert__"):
    setattr(TensorExpr, _name, _operator(_name))
del _name


def _flatten(args, kwargs) -> list:
    out = []
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, (tuple, list)):
            out.extend(a)
        else:
            out.append(a)
    return out


def _record(tracer, name: str, args: tuple, kwargs: dict):
    """An elementwise torch op whose operands include captured tensors or TensorExprs."""
    flat = _flatten(args, kwargs)
    if any(isinstance(a, (_trace.Proxy, _trace._Partial)) for a in flat):
        # With a traced value the result is one element: lift the operands (0-d only).
        def lift(a):
            return _trace.Proxy(tracer, tracer.lift(a)) if isinstance(a, TensorExpr) else a
        return _apply(name, tuple(lift(a) for a in args), {k: lift(v) for k, v in kwargs.items()})
    shapes = [tuple(a.shape) for a in flat if isinstance(a, (torch.Tensor, TensorExpr))]
    shape = _broadcast(shapes)
    for a in flat:
        if isinstance(a, torch.Tensor):
            _trace._dtype_kind(a.dtype)  # raises for complex and other dtypes

    def operand(a, indices):
        if isinstance(a, torch.Tensor):
            return TensorExpr.leaf(tracer, a).emit(_aligned(indices, shape, tuple(a.shape)))
        if isinstance(a, TensorExpr):
            return a.emit(_aligned(indices, shape, a.shape))
        return a

    def emit(indices):
        return _apply(name, tuple(operand(a, indices) for a in args),
                      {k: operand(v, indices) for k, v in kwargs.items()})
    return TensorExpr(tracer, shape, emit, "expression over captured tensors")


def _apply(name: str, args: tuple, kwargs: dict):
    """The op on traced values (at least one operand is a Proxy)."""
    if name in _CASTS:
        return getattr(args[0], name)(*args[1:], **kwargs)
    if name == "__pos__":
        return args[0]
    return _trace._call(name, args, kwargs)


def _frozen(name: str, what: str = "a captured tensor"):
    return TraceError(
        f"'{name}' on {what} inside a mod would run once, at trace time, at "
        f"{_trace._user_loc()}: its result would not follow in-place updates of the tensor nor "
        "pass gradients to it. Inside a mod use elementwise torch ops and index captured "
        "tensors with integers or the mod's arguments (those become part of the graph); "
        "compute anything else outside the mod, capture the result, and call ae.compile again "
        "when it changes")


def _modifies(name: str) -> bool:
    if name in ("__setitem__", "__delitem__"):
        return True
    if name.startswith("__i") and name not in ("__index__", "__int__", "__invert__"):
        return True  # __iadd__, __imul__, ...
    return name.endswith("_") and not name.endswith("__")  # add_, mul_, copy_, ...


def _contains_tensor(x) -> bool:
    if isinstance(x, (torch.Tensor, TensorExpr)):
        return True
    if isinstance(x, (tuple, list)):
        return any(_contains_tensor(y) for y in x)
    return False


class CaptureMode(TorchFunctionMode):
    """Active while the mods are traced (see the module's docstring)."""

    def __init__(self, tracer):
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        flat = _flatten(args, kwargs)
        if any(isinstance(a, (_trace.Proxy, _trace._Partial)) for a in flat):
            if name == "__getitem__":  # a captured tensor indexed by traced values
                if isinstance(args[0], TensorExpr):
                    return args[0][args[1]]
                return _trace._index_buffer(args[0], args[1])
            return _trace._call(name, args, kwargs)
        if not any(isinstance(a, (torch.Tensor, TensorExpr)) for a in flat):
            return func(*args, **kwargs)  # a factory: a new constant tensor
        attr = getattr(getattr(func, "__self__", None), "__name__", "") if name == "__get__" else ""
        what = f".{attr}" if attr else name
        if _modifies(name) or attr in _TENSOR_ATTRS:
            raise _frozen(what)
        if name == "__getitem__" and isinstance(args[0], torch.Tensor):
            return TensorExpr.leaf(self.tracer, args[0])[args[1]]
        if name in _elementwise():
            return _record(self.tracer, name, args, kwargs)
        if name in _TO_PYTHON or any(isinstance(a, TensorExpr) for a in flat):
            raise _frozen(what)
        result = func(*args, **kwargs)  # shape, dtype, dim(), requires_grad, ...
        if _contains_tensor(result):
            raise _frozen(what)  # reductions, matmul, views (.T, .data, .view), ...
        return result
