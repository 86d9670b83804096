"""Autograd at the edges (issue 16): lse in float64 for float64 inputs, so gradcheck works
through it; a clear error, and no deprecation warning, for gradients of gradients."""
import warnings

import pytest
import torch

import attention_engine as ae
from attention_engine import mods
from conftest import rand_qkv


def test_lse_is_float64_for_float64_inputs_and_gradcheck_passes():
    q, k, v = rand_qkv(B=1, HQ=2, HKV=1, SQ=5, SKV=6, DQK=4, DV=3)
    attn = ae.compile(mods.softcap(2.0), mods.causal)
    out, lse = attn(q, k, v, return_lse=True)
    assert lse.dtype == torch.float64
    assert torch.autograd.gradcheck(lambda q, k, v: attn(q, k, v, return_lse=True)[1],
                                    (q, k, v))


def test_double_backward_raises_without_a_deprecation_warning():
    q, k, v = rand_qkv(B=1, HQ=2, HKV=2, SQ=5, SKV=5, DQK=4, DV=4)
    attn = ae.compile(mask_mod=mods.causal)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (gq,) = torch.autograd.grad(attn(q, k, v).sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match="gradients of gradients"):
        gq.sum().backward()
