"""SeerAttention's pieces (attention_engine/seer.py) on the CPU, in float64 against written-out
computations: the pooled attention map, the gate's pooling and logits, its loss, block
selection, block-sparse attention forward and backward, and a gate that learns (the loss
falls). On the GPU: block-sparse attention on the kernels against float64 (marked gpu)."""
import math

import pytest
import torch

import attention_engine as ae
from attention_engine import mods
from attention_engine.seer import (BlockSparseAttention, SeerGate, attention_with_pooling,
                                   gate_loss, pooled_attention_map, select_blocks)
from conftest import assert_close, oracle, rand_qkv


def _weights(q, k, score_mod=None, mask_mod=None):
    """The attention weights [B, Hq, Sq, Skv] written out (softmax of the masked scores)."""
    B, H, Sq, D = q.shape
    kk = k.repeat_interleave(H // k.shape[1], 1)
    s = q @ kk.transpose(-1, -2) / math.sqrt(D)
    b, h = torch.arange(B).view(B, 1, 1, 1), torch.arange(H).view(1, H, 1, 1)
    qi, ki = torch.arange(Sq).view(1, 1, Sq, 1), torch.arange(k.shape[2]).view(1, 1, 1, -1)
    if score_mod is not None:
        s = score_mod(s, b, h, qi, ki)
    if mask_mod is not None:
        s = s.masked_fill(~mask_mod(b, h, qi, ki), float("-inf"))
    return torch.softmax(s, -1)


@pytest.mark.parametrize("S,bs", [(64, 16), (70, 16)])
def test_pooled_map_is_the_block_max_of_the_weights_row_normalized(S, bs):
    slopes = mods.alibi_slopes(4).double()
    score_mod, mask_mod = mods.alibi(slopes), mods.causal
    attn = ae.compile(score_mod, mask_mod)
    q, k, _ = rand_qkv(B=2, HQ=4, HKV=2, SQ=S, SKV=S, DQK=8, DV=8, requires_grad=False)
    got = pooled_attention_map(attn, q, k, bs)
    p = _weights(q, k, score_mod, mask_mod)
    nb = -(-S // bs)
    want = torch.zeros(2, 4, nb, nb, dtype=torch.float64)
    for i in range(nb):
        for j in range(nb):
            want[..., i, j] = p[..., i * bs:(i + 1) * bs, j * bs:(j + 1) * bs].amax((-1, -2))
    want = want / want.sum(-1, keepdim=True)
    assert got.dtype == torch.float32
    assert_close(got.double(), want, 1e-6, "pooled map")
    assert torch.all(got.triu(1) == 0)  # causal: nothing above the diagonal blocks


def _pooled_written_out(p, bs):
    """The map from weights p [B, H, Sq, Skv]: the max over each bs x bs block, rows
    normalized (rows of zeros stay zeros)."""
    B, H, Sq, Skv = p.shape
    nq, nk = -(-Sq // bs), -(-Skv // bs)
    want = torch.zeros(B, H, nq, nk, dtype=torch.float64)
    for i in range(nq):
        for j in range(nk):
            want[..., i, j] = p[..., i * bs:(i + 1) * bs, j * bs:(j + 1) * bs].amax((-1, -2))
    return want / want.sum(-1, keepdim=True).clamp_min(1e-300)


def _late_causal(b, h, q_idx, kv_idx):  # the first 20 queries keep nothing
    return (q_idx >= 20) & (kv_idx <= q_idx)


POOLING_CASES = {
    "alibi_causal": (mods.alibi(mods.alibi_slopes(4)), mods.causal),
    "window": (None, mods.sliding_window(9)),
    "plain": (None, None),
    "empty_rows": (mods.softcap(5.0), _late_causal),
}


@pytest.mark.parametrize("bs", [16, 24])
@pytest.mark.parametrize("name", sorted(POOLING_CASES))
def test_attention_with_pooling_is_the_forward_and_the_map(name, bs):
    """One call gives attn's output and LSE (and their gradients) and the pooled map of the
    written-out weights: GQA, more keys than queries, blocks that do not divide the lengths,
    query rows that keep nothing (their blocks 0, a query block of such rows all zeros)."""
    score_mod, mask_mod = POOLING_CASES[name]
    attn = ae.compile(score_mod, mask_mod)
    q, k, v = rand_qkv(B=2, HQ=4, HKV=2, SQ=50, SKV=50 if mask_mod else 70, DQK=8, DV=12)
    out, lse, pooled = attention_with_pooling(attn, q, k, v, bs, return_lse=True)
    ref, ref_lse = attn(q, k, v, return_lse=True)
    assert_close(out, ref, 1e-12, "out")
    assert torch.equal(torch.isneginf(lse), torch.isneginf(ref_lse))  # rows that keep nothing
    assert_close(lse.nan_to_num(neginf=0.0), ref_lse.nan_to_num(neginf=0.0), 1e-12, "lse")
    assert pooled.dtype == torch.float64 and not pooled.requires_grad
    with torch.no_grad():
        weights = _weights(q, k, score_mod, mask_mod).nan_to_num(0.0)
    assert_close(pooled, _pooled_written_out(weights, bs), 1e-12, "pooled map")
    if name == "empty_rows" and bs <= 20:
        assert torch.all(pooled[:, :, 0] == 0)  # the first block's rows keep nothing
    dout = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), dout)
    want = torch.autograd.grad(ref, (q, k, v), dout)
    for a, b_ in zip(got, want):
        assert_close(a, b_, 1e-12, "gradient")
    # the same map without V (k as V), in float32
    assert_close(pooled_attention_map(attn, q, k, bs).double(), pooled, 1e-6, "pooled_attention_map")


def test_attention_with_pooling_of_other_normalizations_pools_their_weights():
    """normalize='none': the weights are the (masked) scores; the map pools them as written."""
    attn = ae.compile(mods.sigmoid(), mods.causal, normalize="none")
    q, k, v = rand_qkv(B=1, HQ=2, HKV=2, SQ=40, SKV=40, DQK=8, DV=8, requires_grad=False)
    out, pooled = attention_with_pooling(attn, q, k, v, 16)
    assert_close(out, attn(q, k, v), 0, "out")
    s = torch.sigmoid(q @ k.transpose(-1, -2) / math.sqrt(8)).tril()
    assert_close(pooled.double(), _pooled_written_out(s, 16), 1e-6, "pooled map")


def test_attention_with_pooling_checks_its_arguments():
    attn = ae.compile(mask_mod=mods.causal)
    q, k, v = rand_qkv(B=1, HQ=2, HKV=2, SQ=16, SKV=16, DQK=8, DV=8, requires_grad=False)
    with pytest.raises(ValueError, match="block_size"):
        attention_with_pooling(attn, q, k, v, 0)
    with pytest.raises(ValueError, match=r"\[B, H, S, D\]"):
        attention_with_pooling(attn, q[0], k[0], v[0], 16)
    with pytest.raises(ValueError, match="softmax variants"):  # the op itself, called directly
        none = ae.compile(normalize="none")
        torch.ops.attention_engine.attention_pooled(q, k, v, [], none.key, 0.5, 16)
    # the Meta kernel's shapes (torch.compile)
    qm, km, vm = (t.to("meta") for t in (q, k, v))
    out, lse, pooled = torch.ops.attention_engine.attention_pooled(qm, km, vm, [], attn.key, 0.5, 5)
    assert out.shape == (1, 2, 16, 8) and lse.shape == (1, 2, 16) and pooled.shape == (1, 2, 4, 4)


def test_gate_pools_each_block_and_reads_its_kv_group():
    torch.manual_seed(0)
    gate = SeerGate(heads=4, kv_heads=2, head_dim=8, block_size=16, hidden=6, rope=False).double()
    q, k, _ = rand_qkv(B=1, HQ=4, HKV=2, SQ=40, SKV=40, DQK=8, requires_grad=False)
    logits = gate(q, k)
    assert logits.shape == (1, 4, 3, 3) and logits.dtype == torch.float32
    assert torch.isneginf(logits.triu(1)[..., 0, 1:]).all()

    def pooled(x, i):  # block i: rows i*16 .. min(S, (i+1)*16)
        blk = x[:, :, i * 16:(i + 1) * 16]
        return torch.cat([blk.mean(2), blk.amax(2), blk.amin(2)], -1)
    for h in range(4):
        for i in range(3):
            for j in range(i + 1):
                qv = pooled(q, i)[0, h] @ gate.wq[h]
                kv = pooled(k, j)[0, h // 2] @ gate.wk[h // 2]
                want = (qv @ kv / math.sqrt(6)).item()
                assert abs(logits[0, h, i, j].item() - want) < 1e-4, (h, i, j)
    with pytest.raises(ValueError, match="kv_heads .3. must divide heads"):
        SeerGate(heads=4, kv_heads=3, head_dim=8)
    with pytest.raises(ValueError, match="takes q"):
        gate(q[:, :2], k)
    with pytest.raises(ValueError, match="as many queries as keys"):
        gate(q, k[:, :, :20])


def test_gate_loss_is_the_row_kl_and_vanishes_at_the_target():
    torch.manual_seed(1)
    target = torch.softmax(torch.randn(2, 3, 8, 8), -1).tril()
    target = target / target.sum(-1, keepdim=True)
    logits = torch.randn(2, 3, 8, 8).masked_fill(~torch.ones(8, 8, dtype=torch.bool).tril(), float("-inf"))
    logp = torch.log_softmax(logits, -1)[..., 2:, :]
    t = target[..., 2:, :]
    want = torch.where(t > 0, t * (t.log() - logp), 0.0).sum(-1).mean()
    got = gate_loss(logits, target)
    assert abs(got.item() - want.item()) < 1e-5 and got.item() > 0
    at_target = target.log()  # -inf above the diagonal, as a causal gate's logits
    assert abs(gate_loss(at_target, target).item()) < 1e-6


def test_select_blocks_by_ratio_and_by_threshold():
    torch.manual_seed(2)
    logits = torch.randn(2, 2, 10, 10).masked_fill(~torch.ones(10, 10, dtype=torch.bool).tril(), float("-inf"))
    keep = select_blocks(logits, keep_ratio=0.3)
    assert keep.dtype == torch.bool and not keep.triu(1).any()
    assert keep.diagonal(dim1=-2, dim2=-1).all()
    for i in range(10):
        n = keep[..., i, :].sum(-1)
        k_row = max(1, math.ceil(0.3 * (i + 1)))
        assert ((n == k_row) | (n == k_row + 1)).all()  # + the diagonal when not among the top
    probs = torch.softmax(logits, -1)
    keep = select_blocks(logits, threshold=0.2)
    assert torch.equal(keep, (probs > 0.2) | torch.eye(10, dtype=torch.bool))
    with pytest.raises(ValueError, match="one of them"):
        select_blocks(logits)
    with pytest.raises(ValueError, match="keep_ratio must be in"):
        select_blocks(logits, keep_ratio=1.5)
    with pytest.raises(ValueError, match="as many query blocks as key blocks"):
        select_blocks(logits[..., :4], keep_ratio=0.5)
    with pytest.raises(ValueError, match="skip_first must be in"):
        gate_loss(logits, probs, skip_first=1.0)
    with pytest.raises(ValueError, match="must be positive"):
        SeerGate(heads=4, kv_heads=0, head_dim=8)


@pytest.mark.parametrize("heads", ["query", "kv", "one"])
@pytest.mark.parametrize("name", ["causal", "alibi_window"])
def test_block_sparse_attention_equals_the_dense_mask(name, heads):
    """Blocks per query head (batch 1: broadcast over B), per KV head (each shared by its
    two query heads; per batch) or one for every head, against the oracle on the dense mask."""
    bs = 8
    score_mod, mask_mod = {"causal": (None, mods.causal),
                           "alibi_window": (mods.alibi(mods.alibi_slopes(4).double()),
                                            mods.sliding_window(12))}[name]
    sparse = BlockSparseAttention(score_mod, mask_mod, block_size=bs)
    q, k, v = rand_qkv(B=2, HQ=4, HKV=2, SQ=37, SKV=37, DQK=8, DV=8)
    gen = torch.Generator().manual_seed(3)
    shape = {"query": (1, 4), "kv": (2, 2), "one": (2, 1)}[heads]
    blocks = torch.rand(*shape, 5, 5, generator=gen) < 0.5
    blocks[:, 0, 1] = False  # a query block with nothing kept: its rows return 0
    out, lse = sparse(q, k, v, blocks, return_lse=True)
    per_q = blocks.repeat_interleave(2, 1) if heads == "kv" else blocks
    full = per_q.expand(2, 4, 5, 5)

    def dense_mask(b, h, qi, ki):
        keep = full[b, h, qi // bs, ki // bs]
        return keep if mask_mod is None else keep & mask_mod(b, h, qi, ki)
    ref, ref_lse = oracle(q, k, v, score_mod, dense_mask)
    assert_close(out, ref, 1e-10, "out")
    assert (out[:, 0, 8:16] == 0).all()
    dout = torch.randn_like(out)
    for a, b_, what in zip(torch.autograd.grad(out, (q, k, v), dout),
                           torch.autograd.grad(ref, (q, k, v), dout), ("dq", "dk", "dv")):
        assert_close(a, b_, 1e-10, what)
    # The engine sees the lookup (its tiles come from the tensor: csrc/ir/block_mask.h).
    found = sparse._variant(heads != "query", {"query": 1, "kv": 2, "one": 0}[heads])[0].variant.block_tensor
    assert found is not None and (found["block_q"], found["block_k"]) == (bs, bs)
    assert found["head_div"] == {"query": 1, "kv": 2, "one": 0}[heads]
    assert found["by_batch"] == (heads != "query") and not found["codes"]
    with pytest.raises(ValueError, match=r"expected \[2 or 1, 4, 2 or 1 heads, 5, 5\]"):
        sparse(q, k, v, blocks[..., :4])
    with pytest.raises(ValueError, match=r"expected \[2 or 1, 4, 2 or 1 heads"):
        sparse(q, k, v, torch.ones(2, 3, 5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="must be a bool tensor"):
        sparse(q, k, v, blocks.int())


def test_a_gate_learns_the_pooled_map():
    torch.manual_seed(0)
    H, Hk, S, D, bs = 4, 2, 128, 16, 16
    attn = ae.compile(mods.alibi(mods.alibi_slopes(H)), mods.causal)
    gate = SeerGate(H, Hk, D, block_size=bs, hidden=16)
    opt = torch.optim.Adam(gate.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        q, k = torch.randn(2, H, S, D), torch.randn(2, Hk, S, D)
        loss = gate_loss(gate(q, k), pooled_attention_map(attn, q, k, bs))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)


def test_seer_attention_module_runs_the_gate_then_the_kept_blocks():
    torch.manual_seed(4)
    module = ae.seer.SeerAttention(4, 2, 8, mods.alibi(mods.alibi_slopes(4)), block_size=8,
                                   keep_ratio=0.4, hidden=8)
    q, k, v = rand_qkv(B=1, HQ=4, HKV=2, SQ=40, SKV=40, DQK=8, DV=8, dtype=torch.float32)
    blocks = module.blocks(q, k)
    assert blocks.shape == (1, 4, 5, 5) and 0 < blocks.float().mean() < 1
    out = module(q, k, v)
    assert_close(out, module.sparse(q, k, v, blocks), 0.0, "forward = sparse(gate's blocks)")
    (dq,) = torch.autograd.grad(out.sum(), q)  # attention's gradients flow; the gate's do not
    assert dq.abs().sum() > 0 and module.gate.wq.grad is None
    loss = module.distill_loss(q, k)
    loss.backward()
    assert loss.item() > 0 and module.gate.wq.grad.abs().sum() > 0
    dense = ae.seer.SeerAttention(4, 2, 8, mods.alibi(mods.alibi_slopes(4)), block_size=8,
                                  threshold=0.0, hidden=8)  # every reachable block
    ref, _ = oracle(q, k, v, mods.alibi(mods.alibi_slopes(4)), mods.causal)
    assert_close(dense(q, k, v), ref, 1e-5, "threshold 0: dense causal")


# ---- the fused kernels (GPU) ------------------------------------------------------------


@pytest.mark.gpu
def test_block_sparse_attention_on_the_kernels():
    bs, S = 64, 1000
    sparse = BlockSparseAttention(mods.softcap(20.0), mods.causal, block_size=bs)
    q, k, v = (torch.randn(2, h, S, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for h in (8, 2, 2))
    logits = torch.randn(2, 8, 16, 16, device="cuda").masked_fill(
        ~torch.ones(16, 16, dtype=torch.bool, device="cuda").tril(), float("-inf"))
    blocks = select_blocks(logits, keep_ratio=0.25)
    out = sparse(q, k, v, blocks)
    dout = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), dout)
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = sparse(q64, k64, v64, blocks)  # float64: the reference executor
    want = torch.autograd.grad(ref, (q64, k64, v64), dout.double())
    rel = lambda a, b: ((a.double() - b).norm() / b.norm()).item()
    assert rel(out, ref) < 2e-2
    for a, b in zip(got, want):
        assert rel(a, b) < 3e-2


@pytest.mark.gpu
@pytest.mark.parametrize("case", [("sm90", 128, 64), ("sm90", 64, 128), ("sm90", 128, 256),
                                  ("sm80", 128, 64), ("sm80", 64, 32)],
                         ids=lambda c: "-".join(map(str, c)))
def test_gate_training_forward_on_the_kernels(case, monkeypatch):
    """attention_with_pooling on the fused forward that writes each row's block maxima (blocks
    within a tile, of a tile, of several tiles): out, lse and the map against float64 (the
    reference executor's), GQA, a length that is no multiple of the block."""
    family, d, bs = case
    if family == "sm80":
        monkeypatch.setenv("AE_DISABLE_SM90", "1")
    attn = ae.compile(mods.alibi(mods.alibi_slopes(8, device="cuda")), mods.causal)
    S = 1000
    gen = torch.Generator(device="cuda").manual_seed(d + bs)
    q, k, v = (torch.randn(2, h, S, d, device="cuda", dtype=torch.bfloat16, generator=gen)
               for h in (8, 2, 2))
    assert attn.backend_for(q, k, v).startswith(family)
    out, lse, pooled = attention_with_pooling(attn, q, k, v, bs, return_lse=True)
    ref, ref_lse, want = attention_with_pooling(attn, q.double(), k.double(), v.double(), bs,
                                                return_lse=True)
    rel = lambda a, b: ((a.double() - b).norm() / b.norm()).item()
    assert rel(out, ref) < 2e-2
    assert (lse.double() - ref_lse).abs().max() < 2e-2
    assert pooled.dtype == torch.float32 and pooled.shape == want.shape
    assert (pooled.double() - want).abs().max() < 1e-2
    assert torch.all(pooled.triu(1) == 0)


@pytest.mark.gpu
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("bs", [64, 128, 96])
@pytest.mark.parametrize("family", ["sm90", "sm80"])
def test_block_tensor_tables_on_the_kernels(bs, family, d, monkeypatch):
    """The block tensor's table (csrc/ir/block_mask.h: built from the tensor and the causal
    rest's own table, not per score) at block sizes that equal, halve or straddle the
    kernels' tiles, per query head, with an empty query block row; forward and backward. At
    D128 the sm90 forward runs 64-key tiles without the overlap, each warpgroup dropping the
    blocks its own rows keep nothing of (the table's halves); the sm90 backward's warpgroups
    do the same for their own 64 keys (halves of the keys)."""
    if family == "sm80":
        monkeypatch.setenv("AE_DISABLE_SM90", "1")
        monkeypatch.setenv("AE_DISABLE_SM90_BWD", "1")
    S = 1100
    n = -(-S // bs)
    sparse = BlockSparseAttention(mask_mod=mods.causal, block_size=bs)
    gen = torch.Generator(device="cuda").manual_seed(bs)
    q, k, v = (torch.randn(1, h, S, d, device="cuda", dtype=torch.bfloat16, generator=gen,
                           requires_grad=True) for h in (4, 2, 2))
    blocks = torch.rand(1, 4, n, n, device="cuda", generator=gen) < 0.4
    blocks[:, 1, 3] = False
    out = sparse(q, k, v, blocks)
    dout = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), dout)
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = sparse(q64, k64, v64, blocks)
    want = torch.autograd.grad(ref, (q64, k64, v64), dout.double())
    rel = lambda a, b: ((a.double() - b).norm() / b.norm()).item()
    assert rel(out, ref) < 2e-2
    for a, b in zip(got, want):
        assert rel(a, b) < 3e-2


# ---- sparse decode: BlockSparseAttention.with_kvcache ---------------------------------------


def _decode_reference(q, k_cache, v_cache, lengths, kept, scale):
    """Each query attends to its sequence's keys below its length in the kept blocks (kept:
    bool [B, Hq, capacity] per key), float64."""
    B, Sq, Hq, D = q.shape
    G = Hq // k_cache.shape[2]
    out = torch.zeros(B, Sq, Hq, v_cache.shape[3], dtype=torch.float64)
    for b in range(B):
        n = int(lengths[b])
        for h in range(Hq):
            for i in range(Sq):
                pos = n - Sq + i
                keep = kept[b, h, :n] & (torch.arange(n) <= pos)
                if not keep.any():
                    continue
                kk, vv = k_cache[b, :n, h // G][keep].double(), v_cache[b, :n, h // G][keep].double()
                w = torch.softmax(q[b, i, h].double() @ kk.T * scale, -1)
                out[b, i, h] = w @ vv
    return out


@pytest.mark.parametrize("form", ["kv_heads", "q_heads", "shared", "indices"])
@pytest.mark.parametrize("paged", [False, True], ids=["contiguous", "paged"])
def test_sparse_decode_reads_only_the_kept_blocks(form, paged):
    """Decode against a cache through the kept key blocks (bool per KV head, per query head,
    shared, or SeerAttention's index lists padded with -1), causal over two new tokens
    appended first; a sequence with nothing kept gives zeros."""
    gen = torch.Generator().manual_seed(7)
    B, S, Hq, Hkv, D, bs, Sq = 3, 96, 4, 2, 8, 16, 2
    nk = S // bs
    kc = torch.randn(B, S, Hkv, D, dtype=torch.float64, generator=gen)
    vc = torch.randn(B, S, Hkv, D, dtype=torch.float64, generator=gen)
    q = torch.randn(B, Sq, Hq, D, dtype=torch.float64, generator=gen)
    kn, vn = (torch.randn(B, Sq, Hkv, D, dtype=torch.float64, generator=gen) for _ in range(2))
    lengths = torch.tensor([40, 93, 7])
    heads = {"kv_heads": Hkv, "q_heads": Hq, "shared": 1, "indices": Hkv}[form]
    per_block = torch.rand(B, heads, nk, generator=gen) < 0.5
    per_block[2] = False  # nothing kept: zeros
    blocks = per_block
    if form == "indices":
        blocks = torch.full((B, heads, nk + 1), -1, dtype=torch.int64)
        for b in range(B):
            for h in range(heads):
                sel = per_block[b, h].nonzero().flatten()
                blocks[b, h, :len(sel)] = sel.flip(0)  # any order
        blocks[0, 0, -1] = nk + 5  # past the blocks: selects nothing
    sparse = BlockSparseAttention(mask_mod=mods.causal, block_size=bs)
    want_k, want_v = kc.clone(), vc.clone()
    for b in range(B):
        want_k[b, lengths[b]:lengths[b] + Sq] = kn[b]
        want_v[b, lengths[b]:lengths[b] + Sq] = vn[b]
    kept = per_block.repeat_interleave(bs, -1)  # per key
    kept = kept.expand(B, Hq, -1) if heads == 1 else kept.repeat_interleave(Hq // heads, 1)
    want = _decode_reference(q, want_k, want_v, lengths + Sq, kept, D ** -0.5)
    if paged:
        page = 16
        perm = torch.randperm(B * S // page, generator=gen)
        table = perm.view(B, S // page).int()
        kp = torch.empty(B * S // page, page, Hkv, D, dtype=torch.float64)
        vp = torch.empty_like(kp)
        kp[table.flatten().long()] = kc.view(B * S // page, page, Hkv, D)
        vp[table.flatten().long()] = vc.view(B * S // page, page, Hkv, D)
        got = sparse.with_kvcache(q, kp, vp, lengths, blocks, kn, vn, table)
    else:
        got = sparse.with_kvcache(q, kc, vc, lengths, blocks, kn, vn)
        assert torch.equal(kc, want_k) and torch.equal(vc, want_v)  # appended in place
    assert_close(got, want, 1e-10, f"sparse decode {form}")
    assert torch.equal(got[2], torch.zeros_like(got[2]))


@pytest.mark.parametrize("group", [1, 4])
def test_sparse_decode_lookup_is_a_block_tensor_also_packed(group):
    """The decode variant's lookup blocks[b, h // G, 0, kv_idx // bs], after the positions
    rewrite and GQA packing (whose h // G becomes the packed KV head h: gqa_pack.py), is a
    block tensor the kernels build their table from (one row of blocks: block_q 0)."""
    from attention_engine import inference
    sparse = BlockSparseAttention(mask_mod=mods.causal, block_size=16)
    attn, slot = sparse._variant(True, group, decode=True)
    ref = inference._positioned(attn, (group, 1) if group > 1 else None, 1)
    bt = ref.variant.block_tensor
    assert bt is not None, ref.trace_json
    assert (bt["buffer"], bt["block_q"], bt["block_k"], bt["by_batch"], bt["head_div"]) == \
        (slot, 0, 16, True, 1)


def test_sparse_decode_refuses_blocks_that_do_not_fit():
    sparse = BlockSparseAttention(block_size=16)
    kc = torch.randn(2, 64, 2, 8)
    q = torch.randn(2, 1, 4, 8)
    with pytest.raises(ValueError, match=r"expected \[2 or 1, 2 or 4 or 1, 4\]"):
        sparse.with_kvcache(q, kc, kc, 10, torch.ones(2, 2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool .B or 1, H, nk. or int index lists"):
        sparse.with_kvcache(q, kc, kc, 10, torch.ones(2, 2, 4))


def test_blocks_from_indices_scatters_on_the_device_side():
    idx = torch.tensor([[[2, 0, -1, -1], [5, 1, 9, -3]]])
    want = [[[True, False, True, False, False, False], [False, True, False, False, False, True]]]
    for dtype in (torch.int64, torch.int32):
        assert ae.seer.blocks_from_indices(idx.to(dtype), 6).tolist() == want
    # the extremes of either dtype select nothing
    for dtype in (torch.int64, torch.int32):
        info = torch.iinfo(dtype)
        got = ae.seer.blocks_from_indices(torch.tensor([[[info.min, info.max, 6, 3]]], dtype=dtype), 6)
        assert got.tolist() == [[[False, False, False, True, False, False]]]


@pytest.mark.gpu
@pytest.mark.parametrize("paged", [False, True], ids=["contiguous", "paged"])
def test_sparse_decode_on_the_kernels(paged):
    """bf16 sparse decode (index lists per KV head, 25% of 64-key blocks of a 4k cache) against
    the float64 reference of the same call."""
    gen = torch.Generator(device="cuda").manual_seed(5)
    B, S, Hq, Hkv, D, bs = 4, 4096, 16, 4, 128, 64
    nk = S // bs
    mk = lambda *shape: torch.randn(*shape, device="cuda", dtype=torch.bfloat16, generator=gen)
    kc, vc, q = mk(B, S, Hkv, D), mk(B, S, Hkv, D), mk(B, 1, Hq, D)
    lengths = torch.tensor([4000, 17, 2500, 4096], device="cuda")
    idx = torch.stack([torch.randperm(nk, device="cuda", generator=gen)[:nk // 4]
                       for _ in range(B * Hkv)]).view(B, Hkv, -1)
    sparse = BlockSparseAttention(block_size=bs)
    table = None
    if paged:
        table = torch.arange(B * S // 256, device="cuda", dtype=torch.int32).view(B, -1)
        kc, vc = kc.view(-1, 256, Hkv, D), vc.view(-1, 256, Hkv, D)
    with torch.no_grad():
        got = sparse.with_kvcache(q, kc, vc, lengths, idx, block_table=table)
        want = sparse.with_kvcache(q.double(), kc.double(), vc.double(), lengths, idx,
                                   block_table=table)
    rel = ((got.double() - want).norm() / want.norm()).item()
    assert rel < 2e-2
