"""Constants and constant folding agree with PyTorch (issue 15, defects 3 and 4): integer
constants must fit the kernels' 32-bit ints (else a clear error, never a wrapped value), and a
folded expression gives PyTorch's answer or is not folded."""
import json
import math

import pytest
import torch

import attention_engine as ae
from attention_engine import _C
from conftest import check_variant

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("value", [2 ** 64, 2 ** 63, -2 ** 63 - 1, 2 ** 40, 2 ** 31, -2 ** 31 - 1])
def test_integer_constant_beyond_32_bits_is_an_error(value):
    with pytest.raises(ae.TraceError, match=rf"integer constant {value} .*32 bits"):
        ae.compile(mask_mod=lambda b, h, q, k: k < value)


def test_integer_constants_at_the_32_bit_limits_work():
    check_variant(mask_mod=lambda b, h, q, k: (k < 2 ** 31 - 1) & (q > -2 ** 31) & (k <= q + 3))


def trace_with_int(value_json: str) -> str:
    """A trace (the tracer's JSON) whose mask compares kv_idx with an integer constant written
    as value_json: what a hand-made or corrupted trace can hold."""
    return ('{"version": 1, "normalize": "softmax", "buffers": [], "outputs": {"mask": 2},'
            '"nodes": [{"op": "param", "name": "kv_idx"},'
            '{"op": "const", "dtype": "int", "value": ' + value_json + '},'
            '{"op": "lt", "args": [0, 1], "loc": "m.py:1: return kv_idx < big"}]}')


@pytest.mark.parametrize("value", ["18446744073709551615", "9223372036854775808", "1e20", "2.5",
                                   "4294967296", "-2147483649"])
def test_graph_refuses_integer_constants_it_cannot_hold(value):
    with pytest.raises(ae.GraphError, match="integer constant"):
        _C.build_variant(trace_with_int(value))


def test_graph_takes_a_32_bit_integer_constant():
    assert "const 2147483647" in _C.build_variant(trace_with_int("2147483647")).text()


def test_folded_integer_overflow_is_an_error():
    with pytest.raises(ae.GraphError, match=r"65536 \* 65536 .*32 bits"):
        ae.compile(mask_mod=lambda b, h, q, k: k < torch.full_like(k, 65536) * 65536)


def test_huge_integer_power_folds_quickly():
    # 1 ** (2**31 - 1) would take 2**31 multiplies one at a time.
    check_variant(mask_mod=lambda b, h, q, k: k <= q * (torch.full_like(q, 1) ** (2 ** 31 - 1)))
    with pytest.raises(ae.GraphError, match="32 bits"):
        ae.compile(mask_mod=lambda b, h, q, k: k < torch.full_like(k, 3) ** 40)


def flips(value_of):
    """A score_mod that is `score` where value_of(score) is nan (or > 0 for the inf cases) and
    -score elsewhere: tells a folded constant's value apart without nan in the output."""
    return lambda s, b, h, q, k: torch.where(value_of(s) != value_of(s), s, -s)


@pytest.mark.parametrize("name,mod", [
    ("float floordiv", lambda s, b, h, q, k: s + torch.full_like(s, 1.0) // 0.1),
    ("float floordiv negative", lambda s, b, h, q, k: s + torch.full_like(s, -1.0) // 0.1),
    ("remainder by inf", lambda s, b, h, q, k: s + torch.full_like(s, 5.0) % INF),
    ("remainder of negative by inf", lambda s, b, h, q, k: torch.where(
        torch.full_like(s, -5.0) % INF > 1e300, s, -s)),
    ("maximum with nan", flips(lambda s: torch.maximum(torch.full_like(s, 1.0),
                                                       torch.full_like(s, NAN)))),
    ("minimum with nan", flips(lambda s: torch.minimum(torch.full_like(s, NAN),
                                                       torch.full_like(s, 1.0)))),
    ("relu of nan", flips(lambda s: torch.relu(torch.full_like(s, NAN)))),
    ("clamp of nan", flips(lambda s: torch.clamp(torch.full_like(s, NAN), -1.0, 1.0))),
    ("sign of nan", lambda s, b, h, q, k: s + torch.sign(torch.full_like(s, NAN))),
    ("x + 0 of -0.0", lambda s, b, h, q, k: torch.where(1.0 / (s * 0.0 + 0) > 0, s, -s)),
    ("0 + x of -0.0", lambda s, b, h, q, k: torch.where(1.0 / (0 + s * 0.0) > 0, s, -s)),
    ("x - -0.0", lambda s, b, h, q, k: torch.where(1.0 / (s * 0.0 - (-0.0)) > 0, s, -s)),
    ("overflow is not reassociated away", lambda s, b, h, q, k: torch.where(
        torch.abs(s * 1e200 * 1e200 * 1e-200 * 1e-200) > 1e300, s, -s)),
    ("underflow is not reassociated away", lambda s, b, h, q, k: torch.where(
        s * 1e-200 * 1e-200 * 1e200 * 1e200 == 0, s, -s)),
    ("float to int of a fraction", lambda s, b, h, q, k: s + torch.full_like(s, -2.5).int()),
])
def test_folding_agrees_with_pytorch(name, mod):
    check_variant(score_mod=mod)


def test_x_minus_zero_and_x_times_one_still_fold():
    text = ae.compile(lambda s, b, h, q, k: (s - 0.0) * 1.0 / 1.0).graph_text()
    assert "sub" not in text and "mul" not in text and "div" not in text, text
