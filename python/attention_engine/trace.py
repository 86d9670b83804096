"""The tracer: runs score_mod(score, b, h, q_idx, kv_idx) and mask_mod(b, h, q_idx, kv_idx) on
proxies and records what they compute, as plain data (JSON) for the C++ core.

A Proxy stands for one element of the score matrix. Python operators and the torch functions
it reaches through ``__torch_function__`` append a node to the trace; every node records the
user's source line. Tensors the mods close over (ALiBi slopes, a bias table, document ids)
become *buffers*: indexing one with proxies (``slopes[h]``, ``bias[b, h]``, ``doc[q_idx]``)
records a load, so new values are read at call time without recompiling.

While a mod runs, a TorchFunctionMode (capture.CaptureMode) sees every torch call, also those
on plain captured tensors: elementwise ones (``torch.exp(log_t)``, ``w * 0.5``, ``bias[0]``)
are recorded as a capture.TensorExpr and become graph nodes when indexed, so they are re-read
at every call and differentiated; any other op on a captured tensor would run once, at trace
time, and freeze its result, so it raises TraceError.
"""
from __future__ import annotations

import json
import linecache
import math
import os
import sys
from typing import Any, Callable, Optional

import torch

from . import capture
from .errors import TraceError

_THIS_FILE = os.path.abspath(__file__)
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))
# The package's own plumbing between the user's call and the mods: never "the user's line".
_PACKAGE_DIR = os.path.dirname(_THIS_FILE)
_INTERNAL_FILES = {_THIS_FILE} | {os.path.join(_PACKAGE_DIR, f) for f in
                                  ("api.py", "module.py", "flex.py", "_block_mask.py",
                                   "capture.py")}

_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1

_FLOAT_DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}
_INT_DTYPES = {torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8}


def _user_loc() -> str:
    """'file.py:LINE: code' of the innermost frame outside this file and torch."""
    f = sys._getframe(1)
    while f is not None:
        path = os.path.abspath(f.f_code.co_filename)
        if path not in _INTERNAL_FILES and not path.startswith(_TORCH_DIR):
            code = linecache.getline(f.f_code.co_filename, f.f_lineno).strip()
            return f"{os.path.basename(path)}:{f.f_lineno}: {code}" if code else \
                f"{os.path.basename(path)}:{f.f_lineno}"
        f = f.f_back
    return ""


def _dtype_kind(dtype: torch.dtype) -> str:
    if dtype in _FLOAT_DTYPES:
        return "float"
    if dtype in _INT_DTYPES:
        return "int"
    if dtype == torch.bool:
        return "bool"
    raise TraceError(f"unsupported dtype {dtype} in a mod (float, int or bool only)"
                     f" at {_user_loc()}")


class Proxy:
    """One traced value (a node of the trace)."""

    __slots__ = ("_tracer", "_id")

    def __init__(self, tracer: "Tracer", node_id: int):
        self._tracer = tracer
        self._id = node_id

    # -- Python control flow and conversions cannot be traced ------------------------------
    def __bool__(self):
        raise TraceError(
            "a mod branches on a traced value (Python `if`, `and`, `or`, `not`, a chained "
            f"comparison or min()/max() of a traced value) at {_user_loc()}; use torch.where(cond, "
            "a, b), `&`, `|`, `~`, torch.minimum / torch.maximum instead")

    def _no_number(self, *_):
        raise TraceError(
            f"a mod converts a traced value to a Python number at {_user_loc()} (float(), int(), "
            "math.* or indexing a list); use torch.* functions and index captured tensors instead")

    __float__ = __int__ = __index__ = __complex__ = _no_number

    def __iter__(self):
        raise TraceError(f"a traced value is a scalar and cannot be iterated, at {_user_loc()}")

    def __getitem__(self, _):
        raise TraceError(f"a traced value is a scalar and cannot be indexed, at {_user_loc()}")

    __hash__ = object.__hash__

    def __repr__(self):
        return f"Proxy(%{self._id})"

    # -- operators -------------------------------------------------------------------------
    def _bin(self, op, other, reverse=False):
        t = self._tracer
        a, b = (t.lift(other), self._id) if reverse else (self._id, t.lift(other))
        return t.node(op, [a, b])

    def __add__(self, o): return self._bin("add", o)
    def __radd__(self, o): return self._bin("add", o, True)
    def __sub__(self, o): return self._bin("sub", o)
    def __rsub__(self, o): return self._bin("sub", o, True)
    def __mul__(self, o): return self._bin("mul", o)
    def __rmul__(self, o): return self._bin("mul", o, True)
    def __truediv__(self, o): return self._bin("div", o)
    def __rtruediv__(self, o): return self._bin("div", o, True)
    def __floordiv__(self, o): return self._bin("floordiv", o)
    def __rfloordiv__(self, o): return self._bin("floordiv", o, True)
    def __mod__(self, o): return self._bin("mod", o)
    def __rmod__(self, o): return self._bin("mod", o, True)
    def __pow__(self, o): return self._bin("pow", o)
    def __rpow__(self, o): return self._bin("pow", o, True)
    def __and__(self, o): return self._bin("and", o)
    def __rand__(self, o): return self._bin("and", o, True)
    def __or__(self, o): return self._bin("or", o)
    def __ror__(self, o): return self._bin("or", o, True)
    def __xor__(self, o): return self._bin("xor", o)
    def __rxor__(self, o): return self._bin("xor", o, True)
    def __lt__(self, o): return self._bin("lt", o)
    def __le__(self, o): return self._bin("le", o)
    def __gt__(self, o): return self._bin("gt", o)
    def __ge__(self, o): return self._bin("ge", o)
    def __eq__(self, o): return self._bin("eq", o)  # type: ignore[override]
    def __ne__(self, o): return self._bin("ne", o)  # type: ignore[override]
    def __neg__(self): return self._tracer.node("neg", [self._id])
    def __pos__(self): return self
    def __abs__(self): return self._tracer.node("abs", [self._id])
    def __invert__(self): return self._tracer.node("not", [self._id])

    # -- tensor-like methods ---------------------------------------------------------------
    def float(self): return self._tracer.cast(self, "float")
    def double(self): return self._tracer.cast(self, "float")
    def half(self): return self._tracer.cast(self, "float")
    def bfloat16(self): return self._tracer.cast(self, "float")
    def int(self): return self._tracer.cast(self, "int")
    def long(self): return self._tracer.cast(self, "int")
    def bool(self): return self._tracer.cast(self, "bool")

    def to(self, *args, **kwargs):
        dtype = kwargs.get("dtype")
        for a in args:
            if isinstance(a, torch.dtype):
                dtype = a
        if dtype is None:
            return self  # a device move: nothing to record
        return self._tracer.cast(self, _dtype_kind(dtype))

    def type(self, dtype):
        return self.to(dtype)

    # -- scalar constructors (torch's and_masks / noop_mask: b.new_ones((), dtype=bool)) ------
    @property
    def device(self):
        return None  # a traced value lives wherever the kernel runs

    def _new(self, what: str, value, args, kwargs):
        size = kwargs.get("size", args[0] if args else ())
        if isinstance(size, torch.Size):
            size = tuple(size)
        if size not in ((), []):
            raise TraceError(f"'.{what}' of a traced value makes a scalar only (size ()), got "
                             f"size {size!r} at {_user_loc()}")
        dtype = kwargs.get("dtype")
        kind = _dtype_kind(dtype) if dtype is not None else self._tracer.kind_of(self)
        return self._tracer.cast(Proxy(self._tracer, self._tracer.lift(value)), kind)

    def new_ones(self, *args, **kwargs): return self._new("new_ones", 1, args, kwargs)
    def new_zeros(self, *args, **kwargs): return self._new("new_zeros", 0, args, kwargs)

    def new_full(self, size, fill_value, **kwargs):
        return self._new("new_full", fill_value, (size,), kwargs)

    def __getattr__(self, name):
        # Tensor methods (score.exp(), q_idx.clamp(0, 7), ...) go through the same table as
        # the torch functions.
        if name.startswith("__"):
            raise AttributeError(name)
        if name == "where":  # x.where(cond, other) == torch.where(cond, x, other)
            return lambda cond, other: _call("where", (cond, self, other), {})
        if name in _METHODS:
            return lambda *args, **kwargs: _call(name, (self,) + args, kwargs)
        raise TraceError(f"unsupported operation '.{name}' on a traced value at {_user_loc()}")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name == "__getitem__":
            return _index_buffer(args[0], args[1])
        return _call(name, args, kwargs or {})


class _Partial:
    """A captured tensor indexed in fewer dims than it has (``bias[b]`` of ``bias[b][h]``)."""

    def __init__(self, tracer, buffer: int, rank: int, indices: list):
        self.tracer, self.buffer, self.rank, self.indices = tracer, buffer, rank, indices

    def __getitem__(self, index):
        return self.tracer.load(self.buffer, self.rank, self.indices + _as_list(index))

    def _fail(self, *_):
        raise TraceError(
            f"captured tensor '{self.tracer.buffers[self.buffer]['name']}' of rank {self.rank} "
            f"is used with only {len(self.indices)} index(es) at {_user_loc()}; index every "
            "dimension")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = _fail
    __rtruediv__ = __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __bool__ = _fail
    __hash__ = object.__hash__

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        for a in args:
            if isinstance(a, _Partial):
                a._fail()
        raise TraceError(f"unsupported use of a partly indexed tensor at {_user_loc()}")


def _as_list(index) -> list:
    return list(index) if isinstance(index, tuple) else [index]


def _index_buffer(tensor, index):
    if isinstance(tensor, Proxy):
        return tensor[index]  # raises: a traced scalar cannot be indexed
    indices = _as_list(index)
    tracer = next((i._tracer for i in indices if isinstance(i, Proxy)), None)
    if tracer is None:
        return NotImplemented
    for i in indices:
        if isinstance(i, slice) or i is None or i is Ellipsis:
            raise TraceError(f"captured tensors can only be indexed by integers and traced "
                             f"indices, not slices, at {_user_loc()}")
    buf = tracer.buffer(tensor)
    return tracer.load(buf, tensor.dim(), indices)


# -- the op table: torch function / Tensor method name -> how to record it ------------------
_UNARY = {
    "exp": "exp", "exp2": "exp2", "log": "log", "log2": "log2", "tanh": "tanh",
    "sigmoid": "sigmoid", "relu": "relu", "abs": "abs", "absolute": "abs", "sqrt": "sqrt",
    "rsqrt": "rsqrt", "sin": "sin", "cos": "cos", "floor": "floor", "ceil": "ceil",
    "trunc": "trunc", "fix": "trunc", "round": "round", "sign": "sign", "neg": "neg",
    "negative": "neg", "logical_not": "not", "bitwise_not": "not", "__neg__": "neg",
    "__abs__": "abs", "__invert__": "not", "special_expit": "sigmoid", "expit": "sigmoid",
}
_BINARY = {
    "add": "add", "sub": "sub", "subtract": "sub", "mul": "mul", "multiply": "mul",
    "div": "div", "divide": "div", "true_divide": "div", "floor_divide": "floordiv",
    "remainder": "mod", "pow": "pow", "float_power": "pow", "minimum": "min", "maximum": "max",
    "lt": "lt", "less": "lt", "le": "le", "less_equal": "le",
    "gt": "gt", "greater": "gt", "ge": "ge", "greater_equal": "ge", "eq": "eq", "ne": "ne",
    "not_equal": "ne", "logical_and": "and", "logical_or": "or", "logical_xor": "xor",
    "bitwise_and": "and", "bitwise_or": "or", "bitwise_xor": "xor",
}
_DUNDER = {
    "__add__": "add", "__sub__": "sub", "__mul__": "mul", "__truediv__": "div",
    "__div__": "div", "__floordiv__": "floordiv", "__mod__": "mod", "__pow__": "pow",
    "__and__": "and", "__or__": "or", "__xor__": "xor", "__lt__": "lt", "__le__": "le",
    "__gt__": "gt", "__ge__": "ge", "__eq__": "eq", "__ne__": "ne",
}
_OTHER = {"where", "clamp", "clip", "clamp_min", "clamp_max", "square", "zeros_like",
          "ones_like", "full_like", "sigmoid", "softplus", "fmax", "fmin", "min", "max",
          "logaddexp"}
_METHODS = set(_UNARY) | set(_BINARY) | _OTHER - {"zeros_like", "ones_like", "full_like"}


_BOOL_RESULT = {"lt", "le", "gt", "ge", "eq", "ne"}
_FLOAT_RESULT = {"div", "pow", "exp", "exp2", "log", "log2", "tanh", "sigmoid", "sqrt", "rsqrt",
                 "sin", "cos"}


def _tracer_of(args) -> "Tracer":
    for a in args:
        if isinstance(a, Proxy):
            return a._tracer
        if isinstance(a, capture.TensorExpr):
            return a.tracer
        if isinstance(a, (tuple, list)):
            for x in a:
                if isinstance(x, Proxy):
                    return x._tracer
    raise TraceError(f"internal: no traced value among the arguments at {_user_loc()}")


def _clamp_bound(t: "Tracer", x, bound, cmp: str) -> "Proxy":
    """One side of torch.clamp: the bound where x is beyond it (cmp "lt": below a minimum,
    "gt": above a maximum), else x. A where, not maximum / minimum: at x == bound torch.clamp
    passes the whole gradient to x, where maximum would split it. A nan bound gives nan."""
    xi, bi = t.lift(x), t.lift(bound)
    if isinstance(bound, float) and math.isnan(bound):
        return t.node("max" if cmp == "lt" else "min", [xi, bi])
    beyond = t.node(cmp, [xi, bi])
    if not isinstance(bound, (int, float)):  # a traced bound may be nan at run time
        beyond = t.node("or", [beyond, t.node("ne", [bi, bi])])
    return t.node("where", [beyond, bi, xi])


def _call(name: str, args, kwargs):
    t = _tracer_of(list(args) + list(kwargs.values()))
    if name in _UNARY:
        return t.node(_UNARY[name], [t.lift(args[0])])
    reverse = name.startswith("__r") and ("__" + name[3:]) in _DUNDER
    if reverse:
        op = _DUNDER["__" + name[3:]]
        return t.node(op, [t.lift(args[1]), t.lift(args[0])])
    if name in ("fmax", "fmin"):  # nan-ignoring; a tie's gradient goes to the first
        a, b = t.lift(args[0]), t.lift(args[1] if len(args) > 1 else kwargs["other"])
        b_nan = t.node("ne", [b, b])
        first = t.node("or", [t.node("ge" if name == "fmax" else "le", [a, b]), b_nan])
        return t.node("where", [first, a, b])
    if name in _DUNDER or name in _BINARY:
        op = _DUNDER.get(name) or _BINARY[name]
        other = args[1] if len(args) > 1 else kwargs.get("other", kwargs.get("exponent"))
        if op == "div" and kwargs.get("rounding_mode") == "floor":
            op = "floordiv"
        elif op == "div" and kwargs.get("rounding_mode") == "trunc":
            return t.node("trunc", [t.node("div", [t.lift(args[0]), t.lift(other)])._id])
        if op in ("add", "sub") and kwargs.get("alpha", 1) != 1:
            other = t.node("mul", [t.lift(other), t.lift(kwargs["alpha"])])
        return t.node(op, [t.lift(args[0]), t.lift(other)])
    if name in ("min", "max"):  # torch.min(a, b) / torch.max(a, b): elementwise, two tensors
        other = args[1] if len(args) > 1 else kwargs.get("other")
        if len(args) + len(kwargs) != 2 or not isinstance(other, (Proxy, torch.Tensor)):
            raise TraceError(f"torch.{name} in a mod takes two values (torch.{name}(a, b)); a "
                             f"reduction over a dimension has nothing to reduce, at {_user_loc()}")
        return t.node(name, [t.lift(args[0]), t.lift(other)])
    if name == "where":
        if len(args) != 3:
            raise TraceError(f"torch.where needs (cond, a, b) in a mod, at {_user_loc()}")
        return t.node("where", [t.lift(a) for a in args])
    if name in ("clamp", "clip", "clamp_min", "clamp_max"):
        lo = kwargs.get("min", args[1] if len(args) > 1 else None)
        hi = kwargs.get("max", args[2] if len(args) > 2 else None)
        if name == "clamp_max":
            lo, hi = None, lo
        x = args[0]
        if lo is not None:
            x = _clamp_bound(t, x, lo, "lt")
        if hi is not None:
            x = _clamp_bound(t, x, hi, "gt")
        return x
    if name == "square":
        x = t.lift(args[0])
        return t.node("mul", [x, x])
    if name == "softplus":  # torch's: x where beta * x > threshold, else log(1 + exp(beta x)) / beta
        beta = kwargs.get("beta", args[1] if len(args) > 1 else 1.0)
        threshold = kwargs.get("threshold", args[2] if len(args) > 2 else 20.0)
        x = t.lift(args[0])
        bx = t.node("mul", [x, t.lift(beta)])
        soft = t.node("div", [t.node("log", [t.node("add", [t.lift(1.0), t.node("exp", [bx])])]),
                              t.lift(beta)])
        return t.node("where", [t.node("gt", [bx, t.lift(threshold)]), x, soft])
    if name == "logaddexp":  # max + log(1 + exp(-|a - b|)); a tie (also -inf, -inf) apart
        a = t.lift(args[0])
        b = t.lift(args[1] if len(args) > 1 else kwargs["other"])
        hi = t.node("max", [a, b])
        tail = t.node("log", [t.node("add", [t.lift(1.0), t.node("exp", [
            t.node("neg", [t.node("abs", [t.node("sub", [a, b])])])])])])
        # (a + b) / 2 at a tie: the value a + log 2, the gradient split as torch splits it
        tie = t.node("add", [t.node("mul", [t.node("add", [a, b]), t.lift(0.5)]),
                             t.lift(math.log(2.0))])
        return t.node("where", [t.node("eq", [a, b]), tie, t.node("add", [hi, tail])])
    if name in ("zeros_like", "ones_like", "full_like"):
        value = 0 if name == "zeros_like" else 1 if name == "ones_like" else args[1]
        kind = t.kind_of(args[0])
        if "dtype" in kwargs and kwargs["dtype"] is not None:
            kind = _dtype_kind(kwargs["dtype"])
        return t.cast(Proxy(t, t.lift(value)), kind)
    raise TraceError(f"unsupported operation 'torch.{name}' in a mod at {_user_loc()}")


class Tracer:
    """Collects the nodes of one trace (both mods share it and its index parameters)."""

    def __init__(self):
        self.nodes: list = []
        self.buffers: list = []
        self.tensors: list = []  # the captured tensors, in the order of first use
        self._buffer_ids: dict = {}
        self._consts: dict = {}
        self._params: dict = {}
        self._names: dict = {}  # id(tensor) -> the name it was found under

    # -- node creation -----------------------------------------------------------------------
    def _append(self, node: dict) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def node(self, op: str, args: list, **attrs) -> Proxy:
        ids = [a._id if isinstance(a, Proxy) else a for a in args]
        return Proxy(self, self._append({"op": op, "args": ids, "loc": _user_loc(), **attrs}))

    def param(self, name: str) -> Proxy:
        if name not in self._params:
            self._params[name] = self._append({"op": "param", "name": name})
        return Proxy(self, self._params[name])

    def const(self, value) -> int:
        if isinstance(value, bool):
            key = ("bool", value)
        elif isinstance(value, int):
            if not _INT32_MIN <= value <= _INT32_MAX:
                raise TraceError(
                    f"integer constant {value} at {_user_loc()} does not fit in 32 bits: kernels "
                    "compute integer (index) arithmetic in 32-bit ints. Use a float constant "
                    f"({float(value)!r}) or a smaller bound")
            key = ("int", value)
        elif isinstance(value, float):
            key = ("float", repr(value))
        else:
            raise TraceError(f"unsupported constant {value!r} ({type(value).__name__}) in a mod "
                             f"at {_user_loc()}")
        if key not in self._consts:
            v = value
            if isinstance(value, float) and not math.isfinite(value):
                v = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
            self._consts[key] = self._append({"op": "const", "dtype": key[0], "value": v})
        return self._consts[key]

    def cast(self, x: Proxy, kind: str) -> Proxy:
        return Proxy(self, self._append({"op": "cast", "dtype": kind, "args": [x._id],
                                         "loc": _user_loc()}))

    def kind_of(self, x) -> str:
        """The type kind of a traced value ("float", "int" or "bool"), as the C++ type check
        infers it (zeros_like / full_like / new_ones take it)."""
        if not isinstance(x, Proxy):
            return "float"
        kinds = self.__dict__.setdefault("_kinds", {})  # node id -> kind (a DAG: memoized)
        if x._id not in kinds:
            kinds[x._id] = self._infer_kind(x._id)
        return kinds[x._id]

    def _infer_kind(self, node_id: int) -> str:
        n = self.nodes[node_id]
        op = n["op"]
        if op == "param":
            return "float" if n["name"] == "score" else "int"
        if op in ("const", "cast"):
            return n["dtype"]
        if op == "load":
            return _dtype_kind(getattr(torch, self.buffers[n["buffer"]]["dtype"]))
        if op in _BOOL_RESULT:
            return "bool"
        if op in _FLOAT_RESULT:
            return "float"
        args = n.get("args", [])[1:] if op == "where" else n.get("args", [])
        kinds = {self.kind_of(Proxy(self, a)) for a in args}
        if "float" in kinds:
            return "float"
        if op in ("and", "or", "xor", "not", "min", "max", "where", "abs") and kinds == {"bool"}:
            return "bool"
        return "int"

    def lift(self, x) -> int:
        """The node id of a traced value, constant or captured 0-d tensor."""
        if isinstance(x, Proxy):
            if x._tracer is not self:
                raise TraceError(f"a traced value from another trace is used at {_user_loc()}")
            return x._id
        if isinstance(x, (bool, int, float)):
            return self.const(x)
        if isinstance(x, torch.Tensor):
            if x.dim() != 0:
                raise TraceError(
                    f"captured tensor of shape {list(x.shape)} is used without indexing at "
                    f"{_user_loc()}; index it with the mod's arguments (e.g. bias[h]) or capture "
                    "a 0-d tensor")
            return self.load(self.buffer(x), 0, [])._id
        if isinstance(x, capture.TensorExpr):
            if x.dim() != 0:
                raise TraceError(
                    f"{x.what} of shape {list(x.shape)} is used without indexing at "
                    f"{_user_loc()}; index it with the mod's arguments (e.g. bias[h])")
            return x.emit([])._id
        if isinstance(x, _Partial):
            x._fail()
        raise TraceError(f"unsupported value {x!r} ({type(x).__name__}) in a mod at {_user_loc()}")

    # -- captured tensors --------------------------------------------------------------------
    def buffer(self, tensor: torch.Tensor) -> int:
        key = id(tensor)
        if key not in self._buffer_ids:
            _dtype_kind(tensor.dtype)  # raises for complex etc.
            self._buffer_ids[key] = len(self.buffers)
            self.tensors.append(tensor)
            self.buffers.append({
                "name": self._names.get(key, f"buffer{len(self.buffers)}"),
                "dtype": str(tensor.dtype).replace("torch.", ""),
                "shape": list(tensor.shape),
                "requires_grad": bool(tensor.requires_grad),
            })
        return self._buffer_ids[key]

    def load(self, buffer: int, rank: int, indices: list):
        if len(indices) < rank:
            return _Partial(self, buffer, rank, indices)
        for i in indices:
            if isinstance(i, float) or (isinstance(i, Proxy) and self.kind_of(i) == "float"
                                        and self.nodes[i._id]["op"] in ("param", "const")):
                raise TraceError(
                    f"captured tensor '{self.buffers[buffer]['name']}' is indexed by a float at "
                    f"{_user_loc()}; indices must be integers")
        ids = [self.lift(i) for i in indices]
        return Proxy(self, self._append({"op": "load", "buffer": buffer, "args": ids,
                                         "loc": _user_loc()}))

    def learn_names(self, fn: Optional[Callable]) -> None:
        """Names of tensors a function reaches by closure or as a global, for messages."""
        if fn is None:
            return
        code = getattr(fn, "__code__", None)
        cells = getattr(fn, "__closure__", None) or ()
        if code is not None:
            for name, cell in zip(code.co_freevars, cells):
                try:
                    value = cell.cell_contents
                except ValueError:
                    continue
                if isinstance(value, torch.Tensor):
                    self._names.setdefault(id(value), name)
            for name in code.co_names:
                value = getattr(fn, "__globals__", {}).get(name)
                if isinstance(value, torch.Tensor):
                    self._names.setdefault(id(value), name)


def _result(tracer: Tracer, value, what: str) -> int:
    if value is None:
        raise TraceError(f"{what} returned None; it must return a value")
    return tracer.lift(value)


def trace(score_mod: Optional[Callable] = None, mask_mod: Optional[Callable] = None,
          normalize="softmax"):
    """Traces the mods (and a custom normalization's functions). Returns (trace JSON text,
    captured tensors in buffer order)."""
    from .normalizers import Normalizer
    custom = isinstance(normalize, Normalizer)
    if not custom and normalize not in ("softmax", "none"):
        raise ValueError(f"normalize must be 'softmax', 'none' or an "
                         f"attention_engine.Normalizer, got {normalize!r}")
    for name, fn in (("score_mod", score_mod), ("mask_mod", mask_mod)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    t = Tracer()
    t.learn_names(score_mod)
    t.learn_names(mask_mod)
    if custom:
        for fn in (normalize.weight, normalize.stat, normalize.finish):
            t.learn_names(fn)
    score = t.param("score")
    b, h, q, kv = (t.param(n) for n in ("b", "h", "q_idx", "kv_idx"))
    # The row statistic right after the mods' parameters: graph rewrites (positions.py,
    # gqa_pack.py) insert their nodes after the leading parameters.
    stat = t.param("stat") if custom and normalize.finish is not None else None
    outputs = {}
    with capture.CaptureMode(t):  # torch ops on captured tensors become graph nodes
        if score_mod is not None:
            outputs["score"] = _result(t, score_mod(score, b, h, q, kv), "score_mod")
        if mask_mod is not None:
            outputs["mask"] = _result(t, mask_mod(b, h, q, kv), "mask_mod")
        if custom:
            # The normalization reads the modified score.
            x = Proxy(t, outputs["score"]) if "score" in outputs else score
            outputs["weight"] = _result(t, normalize.weight(x, b, h, q, kv),
                                        "the normalization's weight")
            if normalize.stat is not None:
                outputs["stat"] = _result(t, normalize.stat(x, b, h, q, kv),
                                          "the normalization's stat")
            if normalize.finish is not None:
                outputs["finish"] = _result(t, normalize.finish(stat, b, h, q),
                                            "the normalization's finish")
    doc = {"version": 1, "normalize": "custom" if custom else normalize, "buffers": t.buffers,
           "nodes": t.nodes, "outputs": outputs}
    if custom:
        doc["log_domain"] = normalize.log_domain
        doc["detach_stats"] = normalize.detach_stats
    return json.dumps(doc, sort_keys=True), list(t.tensors)
