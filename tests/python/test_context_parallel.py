"""ae.context_parallel (issue 24): ring attention over a torch.distributed group. Groups of 2
and 4 CPU processes (gloo) run the sharded forward and backward of each variant and compare
every rank's rows, lse and gradients with the unsharded run in float64; the errors; the
mask-block skipping; the layouts' helpers."""
import datetime
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import attention_engine as ae
from attention_engine import _mask_blocks

# The module (ae.context_parallel is its function).
CP = sys.modules["attention_engine.context_parallel"]
B, H, D = 2, 2, 16
TOL = dict(rtol=1e-9, atol=1e-10)


def _variants():
    """name -> (attn, kv heads, whether the lse exists). The same values on every rank."""
    torch.manual_seed(0)
    slopes = ae.mods.alibi_slopes(H).double().requires_grad_()
    table = torch.randn(H, 2 * 12 + 1, dtype=torch.float64, requires_grad=True)

    def strictly_earlier(b, h, q_idx, kv_idx):  # query 0 keeps nothing: out 0, lse -inf
        return kv_idx < q_idx
    return {
        "plain": (ae.compile(), H, True),
        "causal": (ae.compile(mask_mod=ae.mods.causal), H, True),
        "alibi+causal": (ae.compile(ae.mods.alibi(slopes), ae.mods.causal), H, True),
        "sliding window, GQA": (ae.compile(mask_mod=ae.mods.sliding_window(9)), 1, True),
        "relative bias": (ae.compile(ae.mods.relative_bias(table, 12), ae.mods.causal), H, True),
        "empty rows": (ae.compile(mask_mod=strictly_earlier), H, True),
        "sigmoid, normalize=none": (ae.compile(ae.mods.sigmoid(-2.0), ae.mods.causal,
                                               normalize="none"), H, False),
    }


def _inputs(S, hkv, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, S, D, dtype=torch.float64, generator=g)
    k = torch.randn(B, hkv, S, D, dtype=torch.float64, generator=g)
    v = torch.randn(B, hkv, S, D, dtype=torch.float64, generator=g)
    d_out = torch.randn(B, H, S, D, dtype=torch.float64, generator=g)
    d_lse = torch.randn(B, H, S, dtype=torch.float64, generator=g)
    return q, k, v, d_out, d_lse


def _loss(out, lse, d_out, d_lse):
    loss = (out * d_out).sum()
    if lse is not None:  # -inf rows (nothing kept) carry no gradient
        loss = loss + (torch.where(torch.isfinite(lse), lse, 0.0) * d_lse).sum()
    return loss


def _grads(attn, q, k, v, d_out, d_lse, has_lse, run):
    """(out, lse, [dq, dk, dv, d captured...]) of run(q, k, v) -> (out, lse)."""
    wanted = [b for b in attn.buffers if b.requires_grad]
    out, lse = run(q, k, v) if has_lse else (run(q, k, v), None)
    grads = torch.autograd.grad(_loss(out, lse, d_out, d_lse), [q, k, v] + wanted)
    return out.detach(), None if lse is None else lse.detach(), list(grads)


def _check_variants(rank, world, S):
    calls = []
    real_block = CP._block_forward

    def counting_block(*args):
        calls.append(torch.is_grad_enabled())
        return real_block(*args)
    CP._block_forward = counting_block
    for i, (name, (attn, hkv, has_lse)) in enumerate(_variants().items()):
        q, k, v, d_out, d_lse = _inputs(S, hkv, seed=100 + i)
        leaves = [x.requires_grad_() for x in (q, k, v)]
        ref_out, ref_lse, ref_grads = _grads(
            attn, *leaves, d_out, d_lse, has_lse,
            lambda q, k, v: attn(q, k, v, return_lse=has_lse))
        for layout in CP.LAYOUTS:
            def shard(x):
                return ae.shard_sequence(x, rank, world, layout)
            local = [shard(x).detach().requires_grad_() for x in (q, k, v)]
            calls.clear()
            out, lse, grads = _grads(
                attn, *local, shard(d_out), shard(d_lse), has_lse,
                lambda q, k, v: ae.context_parallel(attn, q, k, v, layout=layout,
                                                    return_lse=has_lse))
            what = f"{name}, {layout}, rank {rank} of {world}"
            torch.testing.assert_close(out, shard(ref_out), **TOL,
                                       msg=lambda m: f"{what}: out: {m}")
            if has_lse:
                torch.testing.assert_close(lse, shard(ref_lse), **TOL,
                                           msg=lambda m: f"{what}: lse: {m}")
            for j, (g, r) in enumerate(zip(grads, ref_grads)):
                expect = shard(r) if j < 3 else r  # captured tensors: the whole gradient
                torch.testing.assert_close(g, expect, **TOL,
                                           msg=lambda m: f"{what}: gradient {j}: {m}")
            if name == "causal":  # the blocks a causal mask empties are not computed
                forward_calls = calls.count(False)
                expected = rank + 1 if layout == "contiguous" else 2 * world + 1
                assert forward_calls == expected, (what, forward_calls, expected)
    CP._block_forward = real_block


def _check_group_of_one(rank, world):
    """Each rank alone (a group of one) gets the plain call, bit for bit."""
    solo = [dist.new_group([r]) for r in range(world)][rank]  # every rank makes every group
    attn, hkv, _ = _variants()["relative bias"]
    q, k, v, d_out, d_lse = _inputs(32, hkv, seed=7)
    leaves = [x.requires_grad_() for x in (q, k, v)]
    out, lse, grads = _grads(attn, *leaves, d_out, d_lse, True,
                             lambda q, k, v: ae.context_parallel(attn, q, k, v, solo,
                                                                 return_lse=True))
    ref_out, ref_lse, ref_grads = _grads(attn, *leaves, d_out, d_lse, True,
                                         lambda q, k, v: attn(q, k, v, return_lse=True))
    assert torch.equal(out, ref_out) and torch.equal(lse, ref_lse)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, **TOL)
    zig = ae.context_parallel(attn, q, k, v, solo, layout="zigzag")
    torch.testing.assert_close(zig, ref_out, **TOL)


def _check_subgroups(rank, world):
    """Two groups of two inside the world (group ranks are not global ranks), an ae.Attention
    module: its table's .grad is the unsharded one on both ranks of a pair."""
    pairs = [dist.new_group([0, 1]), dist.new_group([2, 3])]
    group, sub_rank = pairs[rank // 2], rank % 2
    torch.manual_seed(1)
    table = torch.nn.Parameter(torch.randn(H, 9, dtype=torch.float64))
    module = ae.Attention(ae.mods.relative_bias(table, 4), ae.mods.causal)
    q, k, v, d_out, _ = _inputs(32, H, seed=11 + rank // 2)
    ref = module(q, k, v)
    (ref * d_out).sum().backward()
    ref_grad, module.table.grad = module.table.grad, None

    def shard(x):
        return ae.shard_sequence(x, sub_rank, 2, "zigzag")
    out = ae.context_parallel(module, shard(q), shard(k), shard(v), group, layout="zigzag")
    torch.testing.assert_close(out, shard(ref), **TOL)
    (out * shard(d_out)).sum().backward()
    torch.testing.assert_close(module.table.grad, ref_grad, **TOL)


def _expect_error(match, fn):
    with pytest.raises(ValueError, match=match):
        fn()


def _check_errors(rank, world):
    attn = ae.compile(mask_mod=ae.mods.causal)
    x = torch.randn(1, 2, 8, 16)
    longer = torch.randn(1, 2, 10, 16)
    mine = longer if rank == 1 else x
    _expect_error("disagree on Sq", lambda: ae.context_parallel(attn, mine, mine, mine))
    bad = x[0] if rank == 0 else x
    refused = r"must be \[B, H, S_local, D\]" if rank == 0 else r"rank\(s\) \[0\] .*refused"
    _expect_error(refused, lambda: ae.context_parallel(attn, bad, x, x))
    odd = torch.randn(1, 2, 7, 16)
    _expect_error("must be even", lambda: ae.context_parallel(attn, odd, odd, odd,
                                                              layout="zigzag"))
    other = ae.compile(mask_mod=ae.mods.sliding_window(3)) if rank == 1 else attn
    _expect_error("disagree on variant", lambda: ae.context_parallel(other, x, x, x))
    # The group still works after the refusals (every rank refused at the same point).
    assert ae.context_parallel(attn, x, x, x).shape == x.shape


def _worker(rank, world, init_file, checks):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=120))
    try:
        for check in checks:
            if check == "variants":
                _check_variants(rank, world, S=64 if world == 2 else 96)
            elif check == "group of one":
                _check_group_of_one(rank, world)
            elif check == "subgroups":
                _check_subgroups(rank, world)
            elif check == "errors":
                _check_errors(rank, world)
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world,checks", [
    (2, ("variants", "group of one", "errors")),
    (4, ("variants", "subgroups")),
])
def test_sharded_equals_unsharded(tmp_path, world, checks):
    # A failing rank's traceback is raised here; the other ranks are stopped.
    mp.spawn(_worker, args=(world, str(tmp_path / "init"), checks), nprocs=world, join=True)


# -- in one process ---------------------------------------------------------------------------

def test_refusals_before_any_communication():
    x = torch.randn(1, 2, 8, 16)
    attn = ae.compile(mask_mod=ae.mods.causal)
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="not initialized"):
        ae.context_parallel(attn, x, x, x)
    with pytest.raises(ValueError, match="custom row normalization"):
        ae.context_parallel(ae.compile(normalize=ae.normalizers.softmax_with_temperature(
            torch.ones(2))), x, x, x)
    with pytest.raises(ValueError, match="return_lse=True needs normalize='softmax'"):
        ae.context_parallel(ae.compile(ae.mods.relu_squared, normalize="none"), x, x, x,
                            return_lse=True)
    with pytest.raises(ValueError, match="layout must be one of"):
        ae.context_parallel(attn, x, x, x, layout="striped")
    with pytest.raises(TypeError, match="attn must be"):
        ae.context_parallel(lambda q, k, v: q, x, x, x)


def test_layouts_cover_the_sequence_once():
    for layout in ("contiguous", "zigzag"):
        for world in (1, 2, 4):
            pos = torch.cat([ae.sequence_positions(r, world, 48, layout) for r in range(world)])
            assert sorted(pos.tolist()) == list(range(48))
    assert ae.sequence_positions(1, 4, 16, "zigzag").tolist() == [2, 3, 12, 13]
    x = torch.arange(16.0).view(1, 1, 16, 1)
    assert ae.shard_sequence(x, 3, 4, "zigzag").flatten().tolist() == [6, 7, 8, 9]
    with pytest.raises(ValueError, match="does not divide into 8 equal chunks"):
        ae.shard_sequence(torch.randn(1, 1, 20, 4), 0, 4, layout="zigzag")
    with pytest.raises(ValueError, match="rank 4 is not in a group of 4"):
        ae.sequence_positions(4, 4, 16)


def _kept(attn, q0, kv0, n=8, heads=H):
    return _mask_blocks.block_kept(attn._ref.trace_json, attn.buffers, 1, heads, q0, n, kv0, n,
                                   "cpu")


def test_mask_blocks():
    causal = ae.compile(mask_mod=ae.mods.causal)
    assert _kept(causal, 8, 0) and _kept(causal, 8, 8) and not _kept(causal, 8, 16)
    window = ae.compile(mask_mod=ae.mods.sliding_window(4))
    assert _kept(window, 8, 0) and not _kept(window, 16, 0)  # q - kv >= 9 > 4 everywhere
    docs = torch.tensor([0] * 8 + [1] * 8 + [2] * 8)
    doc = ae.compile(mask_mod=ae.mods.document_mask(docs, causal=False))
    assert _kept(doc, 8, 8) and not _kept(doc, 8, 16)
    docs[16:] = 1  # read at every call, not cached
    assert _kept(doc, 8, 16)
    heads = ae.compile(mask_mod=lambda b, h, q, kv: (h == 1) & (kv > q + 100))
    assert not _kept(heads, 0, 8) and _kept(heads, 0, 104, heads=2)
    # A mask this evaluator does not reproduce exactly (floats) is never skipped.
    fuzzy = ae.compile(mask_mod=lambda b, h, q, kv: (q - kv) * 0.5 > 100.0)
    assert _kept(fuzzy, 0, 8)
    assert _kept(ae.compile(), 0, 8)  # no mask
