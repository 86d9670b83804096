"""FlexAttention code runs unchanged (issue 16): torch's mask combinators and BlockMask,
ae.BlockMask's fields and methods, create_mask, AuxRequest, K/V batch broadcast,
kernel_options; checked against torch's own flex_attention (eager, CPU, float64)."""
import warnings

import pytest
import torch
from torch.nn.attention import flex_attention as tf
from torch.nn.attention.flex_attention import AuxRequest, and_masks, noop_mask, or_masks

import attention_engine as ae
from attention_engine import mods
from conftest import assert_close, oracle, rand_qkv

S = 96


def torch_flex(q, k, v, score_mod=None, block_mask=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tf.flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, **kw)


def torch_block_mask(mask_mod, B=None, H=None, q_len=S, kv_len=S, block=32):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tf.create_block_mask(mask_mod, B, H, q_len, kv_len, device="cpu",
                                    BLOCK_SIZE=block)


def inputs(B=2, H=4, sq=S, skv=S):
    return rand_qkv(B=B, HQ=H, HKV=H, SQ=sq, SKV=skv, requires_grad=False)


def prefix(b, h, q_idx, kv_idx):
    return kv_idx < 20


def windowed(b, h, q_idx, kv_idx):
    return q_idx - kv_idx <= 24


@pytest.mark.parametrize("name,mask_mod", [
    ("and_masks", and_masks(mods.causal, windowed)),
    ("or_masks", or_masks(mods.causal, prefix)),
    ("noop_mask", noop_mask),
    ("nested", and_masks(or_masks(prefix, mods.causal), windowed, noop_mask)),
])
def test_torch_mask_combinators(name, mask_mod):
    q, k, v = inputs()
    ours = ae.flex_attention(q, k, v, block_mask=ae.create_block_mask(
        mask_mod, None, None, S, S, device="cpu", BLOCK_SIZE=32))
    theirs = torch_flex(q, k, v, block_mask=torch_block_mask(mask_mod))
    assert_close(ours, theirs, 1e-9, name)


def t5_bucket(score, b, h, q_idx, kv_idx):
    """T5's bucketed relative position bias: torch.min / torch.max of two tensors."""
    rel = kv_idx - q_idx
    n = torch.abs(rel)
    large = 8 + (torch.log(n.float() / 8 + 1e-6) / 2.77 * 8).to(torch.int64)
    bucket = torch.where(n < 8, n, torch.min(large, torch.full_like(large, 15)))
    return score + T5_TABLE[h, torch.max(bucket, torch.zeros_like(bucket))]


T5_TABLE = torch.randn(4, 16, dtype=torch.float64)


def test_torch_min_max_of_two_tensors():
    q, k, v = inputs()
    assert_close(ae.flex_attention(q, k, v, score_mod=t5_bucket),
                 torch_flex(q, k, v, score_mod=t5_bucket), 1e-9, "T5 bias")


def test_create_mask_matches_torch():
    for fn in (and_masks(mods.causal, windowed), mods.document_mask(torch.arange(40) // 7)):
        ours = ae.create_mask(fn, 2, 1, 40, 40, device="cpu")
        assert torch.equal(ours, tf.create_mask(fn, 2, 1, 40, 40, device="cpu"))
    softcap = mods.softcap(2.0)
    assert torch.equal(ae.create_mask(softcap, 1, 1, 5, 7, device="cpu"),
                       tf.create_mask(softcap, 1, 1, 5, 7, device="cpu"))


def test_block_mask_fields_match_torch():
    doc = torch.arange(S) // 21
    mask_mod = and_masks(mods.causal, lambda b, h, q, kv: doc[q] == doc[kv])
    ours = ae.create_block_mask(mask_mod, 2, 3, S, 80, device="cpu", BLOCK_SIZE=(32, 16))
    theirs = torch_block_mask(mask_mod, 2, 3, S, 80, block=(32, 16))
    assert isinstance(ours, tf.BlockMask) and ours.mask_mod_is_exact
    for field in ("kv_num_blocks", "full_kv_num_blocks", "q_num_blocks", "full_q_num_blocks"):
        assert torch.equal(getattr(ours, field), getattr(theirs, field)), field
    assert torch.equal(ours.to_dense(), theirs.to_dense())
    assert ours.to_string() == theirs.to_string()
    assert ours.shape == theirs.shape == (2, 3, S, 80) and ours.numel() == theirs.numel()
    assert ours.sparsity() == pytest.approx(theirs.sparsity())
    assert len(ours.as_tuple()) == len(theirs.as_tuple())
    assert torch.equal(ours[1].to_dense(), theirs[1].to_dense())
    moved = ours.to("cpu")
    assert isinstance(moved, ae.BlockMask) and moved.mask_mod_is_exact


def test_create_block_mask_default_device():
    mask = ae.create_block_mask(mods.causal, None, None, 64, 64)
    expected = torch.accelerator.current_accelerator(check_available=True) or torch.device("cpu")
    assert mask.kv_num_blocks.device.type == expected.type


@pytest.mark.parametrize("how", ["torch_block_mask", "from_kv_blocks", "adjusted", "sliced"])
def test_block_semantics_as_flex_attention(how):
    """Block data that is not exactly mask_mod's is honoured as FlexAttention does: full
    blocks count whole, partial ones through mask_mod, others not at all."""
    q, k, v = inputs()
    if how == "torch_block_mask":
        bm = torch_block_mask(and_masks(mods.causal, windowed))
        mine = bm
    elif how == "from_kv_blocks":
        # Every other kv block, the diagonal ones partial (causal inside), others full.
        n = S // 32
        dense = torch.zeros(1, 1, n, n, dtype=torch.bool)
        for i in range(n):
            dense[0, 0, i, list(range(i, -1, -2))] = True
        full = dense & ~torch.eye(n, dtype=torch.bool)
        part = dense & torch.eye(n, dtype=torch.bool)

        def ordered(d):
            return (d.sum(-1).to(torch.int32),
                    torch.argsort(d.int(), dim=-1, descending=True, stable=True).to(torch.int32))
        args = (*ordered(part), *ordered(full))
        bm = tf.BlockMask.from_kv_blocks(*args, BLOCK_SIZE=32, mask_mod=mods.causal)
        mine = ae.BlockMask.from_kv_blocks(*args, BLOCK_SIZE=32, mask_mod=mods.causal)
        assert not mine.mask_mod_is_exact
        # torch's eager CPU path runs mask_mod alone (its kernels follow the blocks): the
        # oracle is the blocks' meaning written out.
        up = lambda d: d[0, 0].repeat_interleave(32, 0).repeat_interleave(32, 1)  # noqa: E731
        qi, ki = torch.arange(S).view(-1, 1), torch.arange(S).view(1, -1)
        keep = up(full) | (up(part) & (qi >= ki))
        want = oracle(q, k, v, mask_mod=lambda b, h, i, j: keep[i, j])[0]
        assert_close(ae.flex_attention(q, k, v, block_mask=bm), want, 1e-9, "torch's mask")
        assert_close(ae.flex_attention(q, k, v, block_mask=mine), want, 1e-9, "ours")
        return
    elif how == "adjusted":
        big = torch_block_mask(mods.causal, q_len=2 * S, kv_len=2 * S)
        bm = big._adjust(S, S)
        mine = ae.create_block_mask(mods.causal, None, None, 2 * S, 2 * S, device="cpu",
                                    BLOCK_SIZE=32)._adjust(S, S)
    else:
        doc = (torch.arange(S) // 40).repeat(2, 1) + torch.tensor([[0], [5]])
        mask_mod = mods.document_mask(doc)
        bm = torch_block_mask(mask_mod, B=2)[1:2]
        bm.mask_mod = mask_mod
        mine = ae.create_block_mask(mask_mod, 2, None, S, S, device="cpu", BLOCK_SIZE=32)[1:2]
        mine.mask_mod = mask_mod
        q, k, v = (t[:1] for t in (q, k, v))
    want = torch_flex(q, k, v, block_mask=bm)
    assert_close(ae.flex_attention(q, k, v, block_mask=bm), want, 1e-9, how + " (torch's)")
    assert_close(ae.flex_attention(q, k, v, block_mask=mine), want, 1e-9, how + " (ours)")


def test_sliced_block_mask_without_mask_mod_is_an_error():
    mask = ae.create_block_mask(mods.causal, 2, None, S, S, device="cpu", BLOCK_SIZE=32)
    q, k, v = inputs(B=1)
    with pytest.raises(RuntimeError, match="sliced BlockMask"):
        ae.flex_attention(q, k, v, block_mask=mask[0:1])


def test_aux_request_lse_and_max_scores():
    q, k, v = inputs()
    score_mod = mods.softcap(3.0)
    bm = ae.create_block_mask(and_masks(mods.causal, windowed), None, None, S, S, device="cpu")
    out, aux = ae.flex_attention(q, k, v, score_mod=score_mod, block_mask=bm,
                                 return_aux=AuxRequest(lse=True, max_scores=True))
    want, want_lse = torch_flex(q, k, v, score_mod=score_mod,
                                block_mask=torch_block_mask(and_masks(mods.causal, windowed)),
                                return_lse=True)
    assert_close(out, want, 1e-9, "out")
    assert_close(aux.lse, want_lse, 1e-9, "lse")
    s = score_mod(q @ k.transpose(-1, -2) / 4.0, None, None, None, None)
    keep = tf.create_mask(and_masks(mods.causal, windowed), None, None, S, S, device="cpu")
    assert_close(aux.max_scores, s.masked_fill(~keep, float("-inf")).amax(-1), 1e-12, "max")
    out, aux = ae.flex_attention(q, k, v, return_aux=AuxRequest(lse=False, max_scores=True))
    assert aux.lse is None and aux.max_scores.shape == (2, 4, S)


def test_kernel_options_are_rejected():
    q, k, v = inputs()
    with pytest.raises(NotImplementedError, match="kernel_options are not supported yet"):
        ae.flex_attention(q, k, v, kernel_options={"BLOCK_M": 64})
    ae.flex_attention(q, k, v, kernel_options={})  # empty: nothing to honour


def test_kv_batch_one_broadcasts_with_a_block_mask():
    q, _, _ = inputs(B=3)
    _, k, v = inputs(B=1)
    doc = torch.tensor([[0] * 50 + [1] * 46, [0] * 20 + [1] * 76, [0] * 96])
    mask_mod = mods.document_mask(doc)
    ours = ae.flex_attention(q, k, v, block_mask=ae.create_block_mask(
        mask_mod, 3, None, S, S, device="cpu", BLOCK_SIZE=32))
    theirs = torch_flex(q, k, v, block_mask=torch_block_mask(mask_mod, B=3))
    assert_close(ours, theirs, 1e-9, "broadcast K/V")
    kg, vg = k.clone().requires_grad_(), v.clone().requires_grad_()
    out = ae.flex_attention(q, kg, vg, block_mask=ae.create_block_mask(
        mask_mod, 3, None, S, S, device="cpu"))
    out.sum().backward()
    assert kg.grad.shape == k.shape
    with pytest.raises(ValueError, match="needs a block_mask"):
        ae.flex_attention(q, k, v)


def test_zeros_like_takes_the_kind_of_an_expression():
    """zeros_like / new_ones of an int expression is an int (T5's bucket code relies on it);
    the inference is linear in the graph (a chain that doubles would be 2^40 otherwise)."""
    def score_mod(score, b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        for _ in range(40):
            d = d + d
        return score + T5_TABLE[h, torch.max(d, torch.zeros_like(d)) % 16]
    q, k, v = inputs()
    assert_close(ae.flex_attention(q, k, v, score_mod=score_mod),
                 torch_flex(q, k, v, score_mod=score_mod), 1e-9, "int chain")


def test_from_kv_blocks_states_are_a_block_tensor_the_engine_sees():
    """A BlockMask from kv_num_blocks / kv_indices (partial) and full_kv_* (full): full blocks
    keep every score, partial ones what mask_mod keeps, others none (FlexAttention's
    semantics), against the oracle on that dense mask; the engine recognizes the lookup of
    the block states and builds its tiles from them (csrc/ir/block_mask.h)."""
    from attention_engine.flex import _mask_mod_for
    q, k, v = inputs(B=1, H=2)
    n, bs = S // 32, 32
    codes = torch.randint(0, 3, (1, 2, n, n), generator=torch.Generator().manual_seed(5))

    def listed(c):  # the blocks of code c first in each row, their count
        return (codes == c).sum(-1).int(), torch.sort((codes != c).int(), dim=-1, stable=True).indices.int()
    (nums, idx), (fnums, fidx) = listed(1), listed(2)
    bm = tf.BlockMask.from_kv_blocks(nums, idx, fnums, fidx, BLOCK_SIZE=bs, mask_mod=mods.causal,
                                     seq_lengths=(S, S))
    out = ae.flex_attention(q, k, v, block_mask=bm)

    def dense(b, h, qi, ki):
        c = codes[b, h, qi // bs, ki // bs]
        return (c == 2) | ((c == 1) & (qi >= ki))
    ref, _ = oracle(q, k, v, None, dense)
    assert_close(out, ref, 1e-9, "from_kv_blocks")
    found = ae.compile(mask_mod=_mask_mod_for(bm, q, k)).variant.block_tensor
    assert found is not None and found["codes"] and found["head_div"] == 1
    assert (found["block_q"], found["block_k"]) == (bs, bs)
