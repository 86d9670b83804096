"""A second, independent oracle: PyTorch's own flex_attention (eager, CPU, float64), for the
variants it can express, through attention_engine's drop-in API. PyTorch's flex_attention has
no backward on the CPU, so this checks out and lse; gradients are checked against the
autograd oracle in the other tests."""
import warnings

import pytest
import torch
from torch.nn.attention import flex_attention as torch_flex

import attention_engine as ae
from attention_engine import mods
from conftest import assert_close, rand_qkv

S = 64
SLOPES = mods.alibi_slopes(4).double()
TABLE = torch.randn(4, 2 * 8 + 1, dtype=torch.float64)
DOC = torch.arange(S) // 20

CASES = {
    "plain": (None, None),
    "causal": (None, mods.causal),
    "alibi_causal": (mods.alibi(SLOPES), mods.causal),
    "softcap": (mods.softcap(2.0), None),
    "sliding_window": (None, mods.sliding_window(9)),
    "document": (None, mods.document_mask(DOC)),
    "relative_bias": (mods.relative_bias(TABLE, 8), mods.causal),
    "prefix_lm": (None, mods.prefix_lm(10)),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("gqa", [False, True])
def test_matches_torch_flex_attention(name, gqa):
    score_mod, mask_mod = CASES[name]
    q, k, v = rand_qkv(SQ=S, SKV=S, HQ=4, HKV=2 if gqa else 4, requires_grad=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tmask = None if mask_mod is None else torch_flex.create_block_mask(
            mask_mod, None, None, S, S, device="cpu", BLOCK_SIZE=16)
        ref, ref_lse = torch_flex.flex_attention(q, k, v, score_mod=score_mod, block_mask=tmask,
                                                 enable_gqa=gqa, return_lse=True)
    mask = None if mask_mod is None else ae.create_block_mask(mask_mod, None, None, S, S,
                                                              device="cpu", BLOCK_SIZE=16)
    out, lse = ae.flex_attention(q, k, v, score_mod=score_mod, block_mask=mask, enable_gqa=gqa,
                                 return_lse=True)
    assert_close(out, ref, 1e-9, "out vs torch flex")
    assert_close(lse.double(), ref_lse.double(), 1e-5, "lse vs torch flex")


def test_block_mask_matches_torch_sparsity():
    ours = ae.create_block_mask(mods.sliding_window(30), None, None, 200, 200, device="cpu",
                                BLOCK_SIZE=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = torch_flex.create_block_mask(mods.sliding_window(30), None, None, 200, 200,
                                              device="cpu", BLOCK_SIZE=32)
    assert abs(ours.sparsity() - theirs.sparsity()) < 1e-6


def test_block_mask_size_mismatch():
    mask = ae.create_block_mask(mods.causal, None, None, 32, 32, device="cpu")
    q = torch.randn(1, 2, 16, 8)
    with pytest.raises(ValueError, match=r"built for \(Q_LEN, KV_LEN\) = \(32, 32\)"):
        ae.flex_attention(q, q, q, block_mask=mask)
