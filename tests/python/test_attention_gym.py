"""The attention-gym collection's FlexAttention examples (the attn-gym package, unchanged) that
use only traced ops, run through ae.flex_attention / ae.create_block_mask and compared with
torch's own flex_attention (eager, CPU, float64). Left out: examples built on ops the tracer
does not record (F.gelu in mods.activation), block-mask builders that bypass mask_mod, and
the CUDA-only sparse and linear-attention kernels."""
import warnings

import pytest
import torch
from torch.nn.attention import flex_attention as tf

import attention_engine as ae
from conftest import assert_close, rand_qkv

masks = pytest.importorskip("attn_gym.masks")
gym_mods = pytest.importorskip("attn_gym.mods")

S, H = 128, 4
OFFSETS = torch.tensor([0, 30, 71, 100, 128], dtype=torch.int32)


def mask_examples():
    from attn_gym.masks.document_mask import generate_doc_mask_mod

    is_global = torch.zeros(S, dtype=torch.bool)
    is_global[[0, 64]] = True
    return {
        "causal": masks.causal_mask,
        "sliding_window": masks.generate_sliding_window(16),
        "prefix_lm": masks.generate_prefix_lm_mask(20),
        "document_causal": generate_doc_mask_mod(masks.causal_mask, OFFSETS),
        "packed_causal_document": masks.generate_packed_causal_doc_mask_mod(OFFSETS),
        "dilated_sliding_window": masks.generate_dilated_sliding_window(16, 3),
        "global_sliding_window": masks.generate_global_sliding_window(8, is_global),
        "natten": masks.generate_natten(16, 8, 5, 3),
        "tiled_natten": masks.generate_tiled_natten(16, 8, 5, 3, 4, 4),
        "shared_prefix": masks.generate_shared_prefix_mask_mod(
            OFFSETS, torch.tensor([0, 0, 2, 2], dtype=torch.int32)),
        "batchify": masks.batchify_mask_mod(masks.causal_mask, 32),
        "block_diffusion": masks.generate_block_diffusion_mask(S // 2, 16),
    }


def score_examples():
    return {
        "alibi": gym_mods.generate_alibi_bias(H),
        "tanh_softcap": gym_mods.generate_tanh_softcap(2),
        "sandwich": gym_mods.generate_sandwich_bias(H, S),
    }


def run_torch(q, k, v, score_mod=None, mask_mod=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bm = None if mask_mod is None else tf.create_block_mask(
            mask_mod, None, None, S, S, device="cpu", BLOCK_SIZE=32)
        return tf.flex_attention(q, k, v, score_mod=score_mod, block_mask=bm)


@pytest.mark.parametrize("name", sorted(mask_examples()))
def test_gym_mask(name):
    mask_mod = mask_examples()[name]
    q, k, v = rand_qkv(B=1, HQ=H, HKV=H, SQ=S, SKV=S, requires_grad=False)
    bm = ae.create_block_mask(mask_mod, None, None, S, S, device="cpu", BLOCK_SIZE=32)
    assert_close(ae.flex_attention(q, k, v, block_mask=bm), run_torch(q, k, v, None, mask_mod),
                 1e-9, name)


@pytest.mark.parametrize("name", sorted(score_examples()))
def test_gym_score_mod(name):
    score_mod = score_examples()[name]
    q, k, v = rand_qkv(B=1, HQ=H, HKV=H, SQ=S, SKV=S, requires_grad=False)
    got = ae.flex_attention(q, k, v, score_mod=score_mod,
                            block_mask=ae.create_block_mask(masks.causal_mask, None, None, S, S,
                                                            device="cpu"))
    want = run_torch(q, k, v, score_mod, masks.causal_mask)
    # sandwich multiplies two float32 tables: eager torch rounds the product to float32,
    # attention_engine computes mods in the inputs' precision (float64 here).
    assert_close(got, want, 1e-6 if name == "sandwich" else 1e-9, name)
