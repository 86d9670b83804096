"""Bad input gets a clear Python exception that says what is wrong and where."""
import math

import pytest
import torch

import attention_engine as ae
from attention_engine import mods
from conftest import rand_qkv


def qkv(**kw):
    return rand_qkv(requires_grad=False, **kw)


def test_python_if_on_traced_value():
    def mod(score, b, h, q, k):
        if q > k:  # not traceable
            return score
        return -score

    with pytest.raises(ae.TraceError, match=r"branches on a traced value.*test_errors.py:\d+"):
        ae.compile(mod)


def test_python_min_on_traced_value():
    with pytest.raises(ae.TraceError, match="branches on a traced value"):
        ae.compile(lambda s, b, h, q, k: s + min(q, k))


def test_math_function_on_traced_value():
    with pytest.raises(ae.TraceError, match="converts a traced value to a Python number"):
        ae.compile(lambda s, b, h, q, k: math.exp(s))


def test_unsupported_torch_op_names_op_and_line():
    def mod(score, b, h, q, k):
        return torch.erf(score)  # unsupported

    with pytest.raises(ae.TraceError, match=r"torch\.erf.*test_errors.py:\d+: return torch\.erf"):
        ae.compile(mod)


def test_unsupported_method():
    with pytest.raises(ae.TraceError, match=r"'\.softmax'"):
        ae.compile(lambda s, b, h, q, k: s.softmax(0))


def test_captured_tensor_indexed_beyond_its_rank():
    table = torch.randn(8)
    with pytest.raises(ae.GraphError, match=r"'table' has rank 1 .* indexed with 2 indexes"):
        ae.compile(lambda s, b, h, q, k: s + table[h, q])


def test_captured_tensor_partly_indexed():
    bias = torch.randn(2, 4)
    with pytest.raises(ae.TraceError, match="rank 2 is used with only 1 index"):
        ae.compile(lambda s, b, h, q, k: s + bias[b])


def test_captured_tensor_used_without_index():
    bias = torch.randn(4)
    with pytest.raises(ae.TraceError, match=r"shape \[4\] is used without indexing"):
        ae.compile(lambda s, b, h, q, k: s + bias)


def test_captured_tensor_indexed_by_float():
    table = torch.randn(8)
    with pytest.raises((ae.GraphError, ae.TraceError), match="indexed by a float"):
        ae.compile(lambda s, b, h, q, k: s + table[s])


def test_captured_tensor_sliced():
    table = torch.randn(8, 8)
    with pytest.raises(ae.TraceError, match="not slices"):
        ae.compile(lambda s, b, h, q, k: s + table[q, :].sum())


def test_index_out_of_range_at_call_time():
    table = torch.randn(8, dtype=torch.float64)
    attn = ae.compile(lambda s, b, h, q, k: s + table[q])  # q runs to 32
    with pytest.raises(IndexError, match=r"'table' .* out of range in dim 0.*\[0, 32\]"):
        attn(*qkv(SQ=33))


def test_mask_mod_returning_float():
    with pytest.raises(ae.GraphError, match="mask_mod must return a bool.*returns a float"):
        ae.compile(mask_mod=lambda b, h, q, k: (q - k) * 1.0)


def test_score_mod_returning_bool():
    with pytest.raises(ae.GraphError, match="score_mod must return a number"):
        ae.compile(lambda s, b, h, q, k: s > 0)


def test_mod_returning_none():
    with pytest.raises(ae.TraceError, match="returned None"):
        ae.compile(lambda s, b, h, q, k: None)


def test_bitwise_on_float():
    with pytest.raises(ae.GraphError, match="needs bool or int operands"):
        ae.compile(lambda s, b, h, q, k: torch.where((s & 1) > 0, s, 0.0))


def test_bad_compile_arguments():
    with pytest.raises(ValueError, match="normalize must be 'softmax', 'none' or an "):
        ae.compile(normalize="sparsemax")
    with pytest.raises(TypeError, match="score_mod must be callable"):
        ae.compile(score_mod=3)
    with pytest.raises(TypeError, match="scale must be a finite number"):
        ae.compile(scale="big")
    with pytest.raises(TypeError, match="scale must be a finite number"):
        ae.compile(scale=float("nan"))


@pytest.mark.parametrize("bad,match", [
    (dict(k_batch=3), "same batch size"),
    (dict(v_heads=1), "k and v must have the same number of heads"),
    (dict(q_heads=3), r"query heads \(3\) must be a multiple of the key/value heads \(2\)"),
    (dict(k_dim=8), "q and k must have the same head dim"),
    (dict(v_len=5), "k and v must have the same sequence length"),
])
def test_mismatched_shapes(bad, match):
    B, H, S, D = 2, 2, 10, 16
    q = torch.randn(B, bad.get("q_heads", H), S, D)
    k = torch.randn(bad.get("k_batch", B), H, S, bad.get("k_dim", D))
    v = torch.randn(B, bad.get("v_heads", H), bad.get("v_len", S), D)
    with pytest.raises(ValueError, match=match):
        ae.compile()(q, k, v)


def test_three_dimensional_input():
    q = torch.randn(2, 10, 16)
    with pytest.raises(ValueError, match="must be 4-D"):
        ae.compile()(q, q, q)


def test_wrong_dtypes():
    q, k, v = qkv()
    with pytest.raises(TypeError, match="same dtype"):
        ae.compile()(q, k.float(), v)
    with pytest.raises(TypeError, match="must be floating point"):
        ae.compile()(q.long(), k.long(), v.long())
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        ae.compile()(q.numpy(), k, v)


def test_mixed_devices():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="same device"):
        ae.compile()(q, k.to("meta"), v)


def test_captured_tensor_on_another_device():
    slopes = torch.ones(4, device="meta")
    attn = ae.compile(mods.alibi(slopes))
    with pytest.raises(ValueError, match="captured tensor 'slopes' is on meta but q is on cpu"):
        attn(*qkv())


def test_captured_tensor_changed_rank_is_caught():
    table = torch.randn(4, dtype=torch.float64)
    attn = ae.compile(lambda s, b, h, q, k: s + table[h])
    attn.buffers[0] = torch.randn(4, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="has rank 2 but the variant was traced with rank 1"):
        attn(*qkv())


def test_return_lse_needs_softmax():
    attn = ae.compile(mods.sigmoid(), normalize="none")
    with pytest.raises(ValueError, match="return_lse=True needs a row statistic"):
        attn(*qkv(), return_lse=True)


def test_unknown_variant_key_in_raw_op():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="unknown variant"):
        torch.ops.attention_engine.attention(q, k, v, [], "not-a-variant", 1.0)


def test_flex_gqa_needs_flag():
    q = torch.randn(1, 4, 8, 16)
    k = torch.randn(1, 2, 8, 16)
    with pytest.raises(ValueError, match="enable_gqa=True"):
        ae.flex_attention(q, k, k)
