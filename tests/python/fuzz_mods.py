"""Random score_mod / mask_mod expression trees over the traced ops, for tests/python/test_fuzz.py.

A tree is nested tuples (op, *children); `render` writes it as Python source and `make_mods`
turns the source into real functions, so the very same Python function runs under the tracer
(ae.compile) and on real tensors (the plain PyTorch oracle). Values stay in ranges where float64
results are well conditioned: exp only of bounded values, divisions by |y| + 0.5, logs and
roots of |x| + something, powers of bounded bases, so that a mismatch is a bug and not noise.

Captured tensors (all float64 unless integer): w0 (0-d, learnable), W [H] (learnable), T [N]
(learnable, indexed by key), doc [N] (int64), and expressions over them inside the mod
(torch.exp(w0 * 0.5), (W * 0.5)[h], torch.tanh(T)[k % N]), which must be traced, not frozen.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

N = 5  # length of T and doc

FLOAT_CONSTS = [0.0, 0.5, -1.25, 2.0, 3.0, -0.75, 0.1, 1e-3, 7.5]
INT_CONSTS = [0, 1, 2, 3, -2, 5, 7, -11]


@dataclass
class Case:
    score_src: str  # the body of score_mod (an expression), or "" for none
    mask_src: str   # the body of mask_mod, or ""
    normalize: str


class Gen:
    def __init__(self, rng: random.Random):
        self.r = rng

    def pick(self, xs):
        return xs[self.r.randrange(len(xs))]

    # -- floats -----------------------------------------------------------------------------
    def float_leaf(self) -> str:
        # Every leaf is a tensor (torch.abs(0.5) is a TypeError); Python numbers appear as the
        # second operand of arithmetic in the templates below.
        c = self.pick(["s"] * 4 + ["full_like", "w0", "W", "T", "exp_w0", "scaled_W", "tanh_T",
                                   "int", "folded"])
        if c == "s":
            return "s"
        if c == "full_like":
            return f"torch.full_like(s, {self.pick(FLOAT_CONSTS)!r})"
        if c == "folded":  # constant subexpressions, folded at compile time; tanh keeps an
            # inf among them from making an inf score (whose gradients are nan either way)
            a = repr(self.pick(FLOAT_CONSTS))
            b = self.pick(["0.1", "0.3", "-0.7", "2.0", "float('inf')"])
            return "torch.tanh({})".format(self.pick([
                f"torch.full_like(s, {a}) // {b}", f"torch.full_like(s, {a}) % {b}",
                f"torch.maximum(torch.full_like(s, {a}), torch.full_like(s, {b}))",
                f"torch.relu(torch.full_like(s, {a}) - {b})"]))
        if c == "w0":
            return "w0"
        if c == "W":
            return "W[h]"
        if c == "T":
            return f"T[k % {N}]"
        if c == "exp_w0":
            return "torch.exp(w0 * 0.5)"
        if c == "scaled_W":
            return "(W * 0.5)[h]"
        if c == "tanh_T":
            return f"torch.tanh(T)[(q + k) % {N}]"
        return f"({self.int_expr(1)}) * {self.pick([0.25, -0.5, 0.125])!r}"

    def float_expr(self, depth: int, with_score: bool = True) -> str:
        if depth <= 0 or self.r.random() < 0.2:
            return self.float_leaf()
        x = lambda: self.float_expr(depth - 1, with_score)  # noqa: E731
        kind = self.pick(["unary"] * 5 + ["binary"] * 6 + ["where", "clamp", "cast", "pow",
                                                          "mod", "piecewise"])
        if kind == "unary":
            f = self.pick(["-{}", "torch.abs({})", "torch.tanh({})", "torch.sigmoid({})",
                           "torch.sin({})", "torch.cos({})", "torch.relu({})", "torch.square({})",
                           "torch.exp(torch.tanh({}))", "torch.log(torch.abs({}) + 1.0)",
                           "torch.sqrt(torch.abs({}) + 0.25)", "torch.rsqrt({0} * {0} + 1.0)",
                           "torch.sign({})", "({}).tanh()", "torch.exp2(torch.sin({}))",
                           "torch.log2(torch.abs({}) + 2.0)", "torch.nn.functional.softplus({})",
                           "torch.nn.functional.relu({})", "({}).to(torch.float64)"])
            return f.format(x())
        if kind == "binary":
            a, b = x(), x()
            c = self.pick(FLOAT_CONSTS)
            f = self.pick(["({} + {})", "({} - {})", "({} * {})", "({} / (torch.abs({}) + 0.5))",
                           "torch.maximum({}, {})", "torch.minimum({}, {})",
                           "torch.add({}, {}, alpha=0.5)", "torch.where({} > {}, 1.0, -1.0)",
                           "torch.fmax({}, {})", "torch.fmin({}, {})",
                           "({} + {c!r})", "({c!r} - {})", "({} * {c!r})", "({c!r} / (torch.abs({}) + 1.0))"])
            args = [a, b][:f.count("{}")]
            return f.format(*args, c=c)
        if kind == "where":
            return f"torch.where({self.bool_expr(depth - 1, with_score)}, {x()}, {x()})"
        if kind == "clamp":
            lo = self.pick([-1.0, -0.5, 0.0])
            return self.pick([f"torch.clamp({x()}, {lo}, {lo + 1.5})", f"torch.clamp({x()}, min={lo})",
                              f"({x()}).clamp(max={lo + 1.0})",
                              # traced bounds (s keeps the clamped value score-shaped: torch
                              # does not broadcast clamp's input to its bounds)
                              f"torch.clamp(s * 0.5 + {x()}, min=W[h])",
                              f"torch.clamp(s * 0.5 + {x()}, min=-torch.exp(w0 * 0.5), max=T[k % {N}])"])
        if kind == "cast":
            # .double(): the graph computes in the inputs' float type (float64 here), while
            # .float() would make plain PyTorch compute the rest in float32
            return f"({self.int_expr(depth - 1, with_score)}).double() * 0.25"
        if kind == "pow":
            return self.pick([f"(torch.abs({x()}) + 0.1) ** {self.pick([2, 3, 0.5, 1.5])}",
                              f"{self.pick([2.0, 0.5, 3.0])} ** torch.tanh({x()})",
                              f"torch.pow(torch.sigmoid({x()}), 2.0)"])
        if kind == "mod":
            return self.pick([f"torch.remainder({x()}, {self.pick([0.7, 1.5, 2.0])})",
                              f"({x()} % (torch.abs({x()}) + 0.5))"])
        # piecewise-constant ops: zero gradient in both
        f = self.pick(["torch.floor({} * 2.0)", "torch.ceil({})", "torch.round({} * 3.0)",
                       "torch.trunc({} * 1.5)", "torch.div({}, 0.7, rounding_mode='floor')",
                       "torch.div({}, 0.7, rounding_mode='trunc')"])
        return f.format(x())

    # -- ints -------------------------------------------------------------------------------
    def int_leaf(self) -> str:
        c = self.pick(["b", "h", "q", "k", "q", "k", "doc", "full_like"])
        if c == "doc":
            return f"doc[(q * 3 + k) % {N}]"
        if c == "full_like":
            return f"torch.full_like(q, {self.pick(INT_CONSTS)})"
        return c

    def int_expr(self, depth: int, with_score: bool = False) -> str:
        if depth <= 0 or self.r.random() < 0.3:
            return self.int_leaf()
        i = lambda: self.int_expr(depth - 1, with_score)  # noqa: E731
        f = self.pick(["({} + {})", "({} - {})", "({} * {})", "({} // {c})", "({} % {c})",
                       "torch.abs({})", "torch.maximum({}, {})", "torch.minimum({}, {})",
                       "torch.clamp({}, -3, 4)", "({} & 7)", "({} | 1)", "({} ^ 2)", "(~{})",
                       "torch.where({cond}, {}, {})", "({} * 2 - {})"])
        args = [i() for _ in range(f.count("{}"))]
        cond = self.bool_expr(depth - 1, with_score) if "{cond}" in f else ""
        return f.format(*args, c=self.pick([1, 2, 3, 5]), cond=cond)

    # -- bools ------------------------------------------------------------------------------
    def bool_expr(self, depth: int, with_score: bool) -> str:
        if depth <= 0 or self.r.random() < 0.35:
            if with_score and self.r.random() < 0.3:
                return f"({self.float_expr(1, True)} > {self.pick([0.0, 0.5, -0.5])})"
            op = self.pick(["<", "<=", ">", ">=", "==", "!="])
            return f"({self.int_expr(depth)} {op} {self.int_expr(depth)})"
        b = lambda: self.bool_expr(depth - 1, with_score)  # noqa: E731
        f = self.pick(["({} & {})", "({} | {})", "({} ^ {})", "(~{})", "torch.logical_not({})",
                       f"(({self.int_expr(1)}) % 2).bool()"])
        return f.format(*(b() for _ in range(f.count("{}"))))

    def case(self) -> Case:
        kind = self.pick(["score", "score", "mask", "both", "both", "none_norm"])
        score = self.float_expr(self.r.randint(1, 4)) if kind != "mask" else ""
        mask = self.bool_expr(self.r.randint(0, 3), False) if kind in ("mask", "both") else ""
        if mask and self.r.random() < 0.5:  # keep enough positions: mostly-kept masks too
            mask = f"({mask}) | (q >= k)"
        if kind == "none_norm":
            score = f"torch.sigmoid({score})"
        elif score and self.r.random() < 0.15:  # -inf scores act as a mask
            score = f"torch.where({self.bool_expr(1, True)}, {score}, -float('inf'))"
        return Case(score, mask, "none" if kind == "none_norm" else "softmax")


def make_mods(case: Case, env: dict):
    """The case's score_mod and mask_mod as real Python functions closing over env's tensors
    (so the tracer finds them by name)."""
    names = ", ".join(sorted(env))
    src = f"def _make({names}):\n"
    if case.score_src:
        src += f"    def score_mod(s, b, h, q, k):\n        return {case.score_src}\n"
    else:
        src += "    score_mod = None\n"
    if case.mask_src:
        src += f"    def mask_mod(b, h, q, k):\n        return {case.mask_src}\n"
    else:
        src += "    mask_mod = None\n"
    src += "    return score_mod, mask_mod\n"
    scope = {"torch": torch}
    exec(compile(src, "<fuzz case>", "exec"), scope)  # noqa: S102  (our own generated text)
    return scope["_make"](**env)


def captured(heads: int, gen: torch.Generator) -> dict:
    return {
        "w0": torch.randn((), dtype=torch.float64, generator=gen).requires_grad_(True),
        "W": torch.randn(heads, dtype=torch.float64, generator=gen).requires_grad_(True),
        "T": torch.randn(N, dtype=torch.float64, generator=gen).requires_grad_(True),
        "doc": torch.randint(0, 3, (N,), generator=gen),
    }
