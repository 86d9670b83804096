"""Errors that were raw Python errors now say what was expected (issue 16): a mod with the
wrong number of arguments, a mask_mod passed as score_mod, a Python `if` in
create_block_mask's mask_mod, numpy arrays captured in a mod, an unknown keyword."""
import numpy as np
import pytest
import torch

import attention_engine as ae
from attention_engine import mods
from conftest import rand_qkv


def test_wrong_arity():
    with pytest.raises(TypeError, match=r"score_mod must take 5 arguments \(score, b, h, "
                                        r"q_idx, kv_idx\), but bad\(score, b\) does not"):
        def bad(score, b):
            return score
        ae.compile(bad)


def test_mask_mod_passed_as_score_mod():
    with pytest.raises(TypeError, match="It takes 4, as a mask_mod.*pass it as mask_mod="):
        ae.compile(mods.causal)
    with pytest.raises(TypeError, match="It takes 5, as a score_mod.*pass it as score_mod="):
        ae.compile(mask_mod=mods.softcap(2.0))
    with pytest.raises(TypeError, match="create_block_mask: mask_mod must take 4 arguments"):
        ae.create_block_mask(mods.softcap(2.0), None, None, 8, 8, device="cpu")


def test_python_if_in_create_block_mask():
    def mask_mod(b, h, q_idx, kv_idx):
        if q_idx >= kv_idx:  # not traceable
            return True
        return False

    with pytest.raises(ae.TraceError, match=r"create_block_mask: a mod branches on a traced "
                                            r"value.*test_user_errors.py:\d+: if q_idx"):
        ae.create_block_mask(mask_mod, None, None, 16, 16, device="cpu")


def test_numpy_array_in_a_mod():
    table = np.linspace(0.0, 1.0, 8)
    with pytest.raises(ae.TraceError, match=r"numpy array\(s\) table: capture torch tensors "
                                            r"instead \(torch.as_tensor"):
        ae.compile(lambda s, b, h, q, k: s + table[h])
    doc = np.arange(16) // 4
    with pytest.raises(ae.TraceError, match=r"numpy array\(s\) doc"):
        ae.compile(mask_mod=ae.and_masks(mods.causal, lambda b, h, q, k: doc[q] == doc[k]))


def test_unknown_keyword_at_call_time():
    q, k, v = rand_qkv(requires_grad=False)
    attn = ae.compile()
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) block_mask; it takes "
                                        r"\(q, k, v, \*, return_lse=False\).*ae.flex_attention"):
        attn(q, k, v, block_mask=None)
    with pytest.raises(TypeError, match=r"flex_attention got unexpected keyword argument\(s\) "
                                        r"causal; it takes FlexAttention's"):
        ae.flex_attention(q, k, v, causal=True)


def test_unsupported_op_points_at_the_users_line():
    def mask_mod(b, h, q_idx, kv_idx):
        return torch.erf(q_idx) > 0  # unsupported

    with pytest.raises(ae.TraceError, match=r"torch\.erf.*test_user_errors.py:\d+"):
        ae.compile(mask_mod=ae.and_masks(mods.causal, mask_mod))
    with pytest.raises(ae.TraceError, match=r"'\.new_empty'.*test_user_errors.py:\d+: "
                                            r"ae.compile"):
        ae.compile(mask_mod=ae.and_masks(mods.causal, lambda b, h, q, k: q.new_empty(())))
