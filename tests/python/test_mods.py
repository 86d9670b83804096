"""Every ready-made mod against its formula written out here."""
import math

import pytest
import torch

from attention_engine import mods
from conftest import check_variant

S = 40  # square problems for the position-based masks


def test_causal():
    check_variant(mask_mod=mods.causal, SQ=S, SKV=S)


@pytest.mark.parametrize("window", [0, 3, 100])
def test_sliding_window(window):
    check_variant(mask_mod=mods.sliding_window(window), SQ=S, SKV=S)
    explicit = lambda b, h, q, k: (q >= k) & (q - k <= window)  # noqa: E731
    check_variant(mask_mod=explicit, SQ=S, SKV=S)


def test_prefix_lm():
    check_variant(mask_mod=mods.prefix_lm(7), SQ=S, SKV=S)


@pytest.mark.parametrize("causal", [True, False])
def test_document_mask_1d(causal):
    doc = torch.tensor([0] * 12 + [1] * 5 + [2] * 23)
    check_variant(mask_mod=mods.document_mask(doc, causal=causal), SQ=S, SKV=S)


def test_document_mask_2d():
    doc = torch.stack([torch.arange(S) // 7, torch.arange(S) // 13])
    check_variant(mask_mod=mods.document_mask(doc), SQ=S, SKV=S)


def test_alibi_matches_formula():
    slopes = mods.alibi_slopes(4).double()
    assert torch.allclose(slopes, torch.tensor([2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8],
                                               dtype=torch.float64))
    check_variant(score_mod=mods.alibi(slopes), mask_mod=mods.causal, SQ=S, SKV=S)
    explicit = lambda s, b, h, q, k: s - slopes[h] * (q - k)  # noqa: E731
    check_variant(score_mod=explicit, mask_mod=mods.causal, SQ=S, SKV=S)


def test_softcap():
    check_variant(score_mod=mods.softcap(2.0))
    with pytest.raises(ValueError):
        mods.softcap(0.0)


def test_relative_bias_learnable():
    table = torch.randn(4, 2 * 6 + 1, dtype=torch.float64, requires_grad=True)
    check_variant(score_mod=mods.relative_bias(table, 6), grads_of=(table,))
    with pytest.raises(ValueError):
        mods.relative_bias(table, 5)


def test_and_or_masks():
    check_variant(mask_mod=mods.and_masks(mods.causal, mods.sliding_window(5)), SQ=S, SKV=S)
    check_variant(mask_mod=mods.or_masks(mods.prefix_lm(4), mods.causal), SQ=S, SKV=S)


def test_sigmoid_and_relu_squared_unnormalized():
    check_variant(score_mod=mods.sigmoid(-math.log(40)), normalize="none")
    check_variant(score_mod=mods.relu_squared, mask_mod=mods.causal, normalize="none",
                  SQ=S, SKV=S)
