"""Every op the tracer records, checked end to end (trace -> C++ graph -> reference executor,
forward and backward) against the same mod applied to real tensors by the oracle."""
import math

import pytest
import torch

import attention_engine as ae
from conftest import check_variant

# score_mods that exercise one op each (float results; int and bool ops feed a where / cast).
SCORE_MODS = {
    "add": lambda s, b, h, q, k: s + 0.5,
    "radd": lambda s, b, h, q, k: 0.5 + s,
    "sub": lambda s, b, h, q, k: s - (q - k) * 0.01,
    "rsub": lambda s, b, h, q, k: 1.0 - s,
    "mul": lambda s, b, h, q, k: s * 1.5,
    "div": lambda s, b, h, q, k: s / 3.0,
    "rdiv": lambda s, b, h, q, k: 1.0 / (s * s + 1.0),
    "int_div": lambda s, b, h, q, k: s + (q - k) / 7,
    "floordiv": lambda s, b, h, q, k: s + ((q - k) // 5) * 0.1,
    "mod": lambda s, b, h, q, k: s + ((q - k) % 4) * 0.1,
    "neg": lambda s, b, h, q, k: -s,
    "pow_const": lambda s, b, h, q, k: s ** 2,
    "rpow_const": lambda s, b, h, q, k: 2.0 ** s,
    "torch_pow": lambda s, b, h, q, k: torch.pow(s, 3),
    "exp": lambda s, b, h, q, k: torch.exp(s * 0.5),
    "exp2": lambda s, b, h, q, k: torch.exp2(s * 0.5),
    "log": lambda s, b, h, q, k: torch.log(s.abs() + 1.0),
    "log2": lambda s, b, h, q, k: torch.log2(s * s + 1.0),
    "tanh": lambda s, b, h, q, k: torch.tanh(s),
    "sigmoid": lambda s, b, h, q, k: torch.sigmoid(s),
    "relu": lambda s, b, h, q, k: torch.relu(s),
    "functional_relu": lambda s, b, h, q, k: torch.nn.functional.relu(s) + s,
    "abs": lambda s, b, h, q, k: torch.abs(s),
    "sqrt": lambda s, b, h, q, k: torch.sqrt(s * s + 1.0),
    "rsqrt": lambda s, b, h, q, k: torch.rsqrt(s * s + 1.0),
    "sin": lambda s, b, h, q, k: torch.sin(s),
    "cos": lambda s, b, h, q, k: torch.cos(s),
    "floor": lambda s, b, h, q, k: s + torch.floor(s * 2.0),
    "ceil": lambda s, b, h, q, k: s + torch.ceil(s * 2.0),
    "trunc": lambda s, b, h, q, k: s + torch.trunc(s * 2.0),
    "round": lambda s, b, h, q, k: s + torch.round(s * 2.0),
    "sign": lambda s, b, h, q, k: s * torch.sign(s - 0.1),
    "clamp": lambda s, b, h, q, k: torch.clamp(s, -0.5, 0.7),
    "clamp_kw": lambda s, b, h, q, k: torch.clamp(s, min=-0.3),
    "clamp_method": lambda s, b, h, q, k: s.clamp(max=0.4),
    "minimum": lambda s, b, h, q, k: torch.minimum(s, s * 0.5 + 0.1),
    "maximum": lambda s, b, h, q, k: torch.maximum(s, torch.zeros_like(s) - 0.2),
    "where": lambda s, b, h, q, k: torch.where(q >= k, s, s * 0.1),
    "where_scalar": lambda s, b, h, q, k: torch.where(s > 0, s, 0.0),
    "lt_le": lambda s, b, h, q, k: torch.where((q < k) | (q <= 3), s, -s),
    "gt_ge": lambda s, b, h, q, k: torch.where((q > k) & (k >= 2), s, 2 * s),
    "eq_ne": lambda s, b, h, q, k: torch.where((q == k) | ((q % 3) != 0), s, 0.5 * s),
    "not": lambda s, b, h, q, k: torch.where(~(q > k), s, -s),
    "xor_bool": lambda s, b, h, q, k: torch.where((q > k) ^ (k > 5), s, 0.0),
    "bitwise_int": lambda s, b, h, q, k: s + ((q & 3) | (k ^ 5)).float() * 0.125,
    "invert_int": lambda s, b, h, q, k: s + (~q).float() * 0.0625,
    "cast_float": lambda s, b, h, q, k: s + q.float() * 0.0625,
    "cast_to": lambda s, b, h, q, k: s + (q - k).to(torch.float64) * 0.02,
    "cast_int": lambda s, b, h, q, k: s + (s * 4).int() * 0.5,
    "cast_long_bool": lambda s, b, h, q, k: s + (q % 2).bool().long() * 0.3,
    "math_const": lambda s, b, h, q, k: s * math.pi + math.e,
    "inf_const": lambda s, b, h, q, k: torch.where(q - k > 20, -float("inf"), s),
    "batch_head": lambda s, b, h, q, k: s + b * 0.5 - h * 0.25,
    "method_exp": lambda s, b, h, q, k: (s * 0.3).exp() + s.tanh(),
    "int_score": lambda s, b, h, q, k: s + 0 * (q - k),
    "square": lambda s, b, h, q, k: torch.square(s),
    "logaddexp": lambda s, b, h, q, k: torch.logaddexp(s, (q - k) * 0.1),
    "logaddexp_tie": lambda s, b, h, q, k: torch.logaddexp(s, torch.where(q % 2 == 0, s, s - 1.0)),
}


@pytest.mark.parametrize("name", sorted(SCORE_MODS))
def test_score_mod_op(name):
    check_variant(score_mod=SCORE_MODS[name])


@pytest.mark.parametrize("name", ["softcap_like", "index_only"])
def test_mask_and_score_share_indices(name):
    mask = (lambda b, h, q, k: (q - k) % 3 != 1) if name == "index_only" else None
    check_variant(score_mod=lambda s, b, h, q, k: torch.tanh(s / 2) * 2, mask_mod=mask)


def test_captured_1d_by_head():
    slopes = torch.rand(4, dtype=torch.float64, requires_grad=True)
    check_variant(score_mod=lambda s, b, h, q, k: s + slopes[h] * (k - q), grads_of=(slopes,))


def test_captured_2d_by_batch_and_head():
    bias = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    check_variant(score_mod=lambda s, b, h, q, k: s + bias[b, h], grads_of=(bias,))


def test_captured_chained_index_equals_tuple_index():
    bias = torch.randn(2, 4, dtype=torch.float64)
    chained = ae.compile(lambda s, b, h, q, k: s + bias[b][h])
    tupled = ae.compile(lambda s, b, h, q, k: s + bias[b, h])
    assert chained.key == tupled.key  # the same graph, hence the same variant


def test_captured_table_by_bucket_function():
    table = torch.randn(16, dtype=torch.float64, requires_grad=True)

    def bucket(d):
        return torch.clamp(d, -7, 7) + 7 + (d > 30).long()

    check_variant(score_mod=lambda s, b, h, q, k: s + table[bucket(q - k)], grads_of=(table,))


def test_captured_document_ids_in_mask():
    doc = torch.tensor([0] * 10 + [1] * 20 + [2] * 17)
    check_variant(mask_mod=lambda b, h, q, k: doc[q] == doc[k], SQ=47, SKV=47)


def test_captured_zero_dim_tensor():
    temp = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    check_variant(score_mod=lambda s, b, h, q, k: s * temp, grads_of=(temp,))


def test_captured_int_and_bool_tensors():
    shift = torch.tensor([1, 2, 3, 0])
    allow = torch.rand(47) > 0.3
    check_variant(score_mod=lambda s, b, h, q, k: s + shift[h] * 0.1,
                  mask_mod=lambda b, h, q, k: allow[k] | (q == k))


def test_captured_tensors_found_once_in_order_of_use():
    a = torch.randn(4, dtype=torch.float64)
    c = torch.randn(4, dtype=torch.float64)

    def mod(s, b, h, q, k):
        return s + c[h] + a[h] * c[h] + a[(h + 1) % 4]

    attn = ae.compile(mod)
    assert [id(t) for t in attn.buffers] == [id(c), id(a)]
    text = attn.graph_text()
    assert '"c"' in text and '"a"' in text
    check_variant(score_mod=mod)


def test_source_line_recorded_for_every_op():
    def mod(s, b, h, q, k):
        return torch.tanh(s) * 3.0  # MARK-LINE

    text = ae.compile(mod).graph_text()
    op_lines = [ln for ln in text.splitlines() if "= tanh" in ln or "= mul" in ln]
    assert op_lines and all("test_trace_ops.py" in ln and "MARK-LINE" in ln for ln in op_lines)


def test_mod_returning_python_constant():
    check_variant(score_mod=lambda s, b, h, q, k: 0.0)  # uniform attention
    check_variant(mask_mod=lambda b, h, q, k: True)
