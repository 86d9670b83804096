"""MLA decode (DeepSeek-V2/V3's latent attention) through with_kvcache: one latent KV head of
576 columns whose first 512 are V, passed as the same memory (v_cache = kv_cache[..., :512]),
16 to 128 query heads. On the CPU the reference executor against the float64 oracle of
conftest.py; on Hopper the MLA decode kernel (templates/sm90/mla_decode.h) against float64
(marked gpu)."""
import pytest
import torch

import attention_engine as ae
from attention_engine import mods
from conftest import assert_close, oracle

D_LATENT, D_V = 576, 512


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-12)).item()


def _paged(cache, page_size, seed):
    """cache [B, S, 1, D] as pages shuffled over a pool (one spare page), and its table."""
    B, S = cache.shape[:2]
    per_seq = S // page_size
    n_pages = B * per_seq + 1
    table = torch.randperm(n_pages, generator=torch.Generator().manual_seed(seed))[:B * per_seq]
    table = table.view(B, per_seq).to(torch.int32)
    pool = torch.full((n_pages, page_size) + tuple(cache.shape[2:]), float("nan"),
                      dtype=cache.dtype)
    pool[table.flatten().long()] = cache.reshape(B * per_seq, page_size, *cache.shape[2:])
    return pool, table


@pytest.mark.parametrize("page_size", [None, 4], ids=["contiguous", "paged"])
@pytest.mark.parametrize("sq", [1, 3])
def test_latent_cache_with_v_in_k_equals_the_oracle(page_size, sq):
    """V as a view of the latent cache, new tokens appended through both views (the same
    memory), causal over the cache with ALiBi: equal to the oracle on K and K[..., :512]."""
    HQ, B, cap = 8, 2, 16
    slopes = mods.alibi_slopes(HQ)
    attn = ae.compile(mods.alibi(slopes), mods.causal)
    gen = torch.Generator().manual_seed(0)
    full = torch.randn(B, cap, 1, D_LATENT, dtype=torch.float64, generator=gen)
    lens = torch.tensor([5, 11])
    kv = full.clone()
    kv[torch.arange(cap)[None, :] >= lens[:, None]] = float("nan")  # never written yet
    new = full[torch.arange(B)[:, None], lens[:, None] + torch.arange(sq)]  # [B, sq, 1, 576]
    table = None
    if page_size:
        kv, table = _paged(kv, page_size, seed=1)
    q = torch.randn(B, sq, HQ, D_LATENT, dtype=torch.float64, generator=gen)
    out, lse = attn.with_kvcache(q, kv, kv[..., :D_V], lens, new, new[..., :D_V], table,
                                 return_lse=True)
    assert out.shape == (B, sq, HQ, D_V) and lse.shape == (B, HQ, sq)
    for b in range(B):
        n = int(lens[b]) + sq
        k = full[b:b + 1, :n].transpose(1, 2)  # [1, 1, n, 576]
        # The queries are the sequence's last sq tokens: zero rows before them.
        qf = torch.cat([q.new_zeros(1, HQ, n - sq, D_LATENT), q[b:b + 1].transpose(1, 2)], 2)
        want, want_lse = oracle(qf, k, k[..., :D_V], mods.alibi(slopes), mods.causal)
        assert_close(out[b:b + 1].transpose(1, 2), want[:, :, n - sq:], 1e-10, f"sequence {b}")
        assert_close(lse[b:b + 1], want_lse[:, :, n - sq:], 1e-10, f"lse {b}")


def test_v_in_k_is_recognized_as_the_kernels_see_the_cache():
    """The CUDA backend's check (v_shares_k) on the [B, H, S, D] views with_kvcache hands the
    ops (the cache transposed; paged: pages transposed): the latent cache's first columns are
    V in K, a copy or another row stride or offset is not."""
    from attention_engine import _C
    kv = torch.zeros(2, 16, 1, D_LATENT)
    k = kv.transpose(1, 2)
    assert _C.v_shares_k(k, kv[..., :D_V].transpose(1, 2))
    assert _C.v_shares_k(k, k)
    assert not _C.v_shares_k(k, kv[..., :D_V].clone().transpose(1, 2))  # a copy
    assert not _C.v_shares_k(k, kv[..., 64:64 + D_V].transpose(1, 2))  # another offset
    wide = torch.zeros(2, 16, 1, 1024)
    assert not _C.v_shares_k(k, wide[..., :D_V].transpose(1, 2))  # another memory and stride
    assert not _C.v_shares_k(k, kv[:, :8, :, :D_V].transpose(1, 2))  # fewer rows


# ---- the MLA decode kernel (GPU, sm_90) ---------------------------------------------------


def _hopper():
    return torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


_GPU_CASES = (
    [(name, 128, 1, 64, None) for name in ("plain", "causal", "alibi", "softcap", "window", "bias")]
    + [("causal", 16, 4, None, None), ("plain", 16, 1, 64, None), ("causal", 128, 4, 64, None),
       ("alibi", 64, 2, 16, None), ("plain", 128, 1, 256, None)]
    + [("plain", 16, 1, 64, splits) for splits in ("1", "2", "1000")]
    + [("causal", 128, 1, None, splits) for splits in ("1", "2", "1000")])


def _mla_mods(name, hq):
    return {"plain": (None, None), "causal": (None, mods.causal),
            "alibi": (mods.alibi(mods.alibi_slopes(hq, device="cuda")), mods.causal),
            "softcap": (mods.softcap(30.0), None), "window": (None, mods.sliding_window(300)),
            "bias": (mods.relative_bias(torch.randn(hq, 65, device="cuda"), 32), mods.causal)}[name]


@pytest.mark.gpu
@pytest.mark.parametrize("case", _GPU_CASES, ids=lambda c: "-".join(map(str, c)))
def test_mla_decode_kernel_against_float64(case, monkeypatch):
    """Ragged lengths (1, 17, 1000, 4097) over a cache whose slots past them hold NaN, 16 to
    128 query heads, 1 to 4 queries, contiguous or paged (16, 64, 256), split counts forced to
    1, 2 and one per block: against float64 on the same cache with zeros past the lengths."""
    if not _hopper():
        pytest.skip("the MLA decode kernel is sm_90's")
    name, hq, sq, page, splits = case
    if splits:
        monkeypatch.setenv("AE_KV_SPLITS", splits)
    attn = ae.compile(*_mla_mods(name, hq))
    cap = 4352
    lens = torch.tensor([1, 17, 1000, 4097], device="cuda").clamp(min=sq).to(torch.int32)
    B = lens.numel()
    gen = torch.Generator(device="cuda").manual_seed(0)
    kv = torch.randn(B, cap, 1, D_LATENT, device="cuda", dtype=torch.bfloat16, generator=gen)
    past = torch.arange(cap, device="cuda")[None, :] >= lens[:, None]
    kv[past] = float("nan")
    q = torch.randn(B, sq, hq, D_LATENT, device="cuda", dtype=torch.bfloat16, generator=gen)
    kz = kv.double().masked_fill(past[:, :, None, None], 0.0)
    with torch.no_grad():
        ref, ref_lse = attn.with_kvcache(q.double(), kz, kz[..., :D_V], lens, return_lse=True)
        if page:
            per_seq = cap // page
            table = torch.randperm(B * per_seq, device="cuda").view(B, per_seq).to(torch.int32)
            pool = torch.empty(B * per_seq, page, 1, D_LATENT, device="cuda", dtype=kv.dtype)
            pool[table.flatten().long()] = kv.view(B * per_seq, page, 1, D_LATENT)
            out, lse = attn.with_kvcache(q, pool, pool[..., :D_V], lens, block_table=table,
                                         return_lse=True)
        else:
            out, lse = attn.with_kvcache(q, kv, kv[..., :D_V], lens, return_lse=True)
    assert out.shape == (B, sq, hq, D_V)
    assert torch.isfinite(out).all()
    assert _rel(out, ref) < 2e-2
    assert (lse.double() - ref_lse).abs().max().item() < 2e-2
    # The MLA kernel ran (not a fallback, which would pass the comparison too): what the ops
    # with_kvcache calls plan for these inputs, as it hands them over.
    from attention_engine import _C
    from attention_engine.gqa_pack import pack_shape
    from attention_engine.inference import _positioned
    pack = pack_shape(hq, 1, sq, D_LATENT)
    qp = q.transpose(1, 2)
    qp = qp.reshape(B, 1, hq * sq, D_LATENT) if pack else qp
    key = _positioned(attn, pack, sq).key
    buffers = list(attn.buffers) + [lens]
    if page:
        backend = _C.paged_backend_for(qp, pool.transpose(1, 2), pool[..., :D_V].transpose(1, 2),
                                       buffers, key, table)
    else:
        backend = _C.backend_for(qp, kv.transpose(1, 2), kv[..., :D_V].transpose(1, 2), buffers,
                                 key)
    assert backend.startswith("sm90 (MLA decode)"), backend


@pytest.mark.gpu
def test_mla_shapes_plan_the_mla_kernel_only_with_v_in_k():
    if not _hopper():
        pytest.skip("the MLA decode kernel is sm_90's")
    from attention_engine import _C
    attn = ae.compile()
    q = torch.randn(2, 1, 128, D_LATENT, device="cuda", dtype=torch.bfloat16)
    kv = torch.randn(2, 1, 1024, D_LATENT, device="cuda", dtype=torch.bfloat16)
    key = attn._ref.key
    assert _C.backend_for(q, kv, kv[..., :D_V], [], key).startswith("sm90 (MLA decode)")
    other = _C.backend_for(q, kv, kv[..., :D_V].clone(), [], key)
    assert other.startswith("reference") and "V is K's first 512 columns" in other, other


def test_v_new_of_a_latent_cache_is_k_news_first_columns():
    """With V in K's memory, the new tokens' V is their K's first columns: v_new may be None
    (or that view); a v_new of its own would overwrite K's columns with other values, so it is
    refused, before anything is written."""
    attn = ae.compile(mask_mod=mods.causal)
    gen = torch.Generator().manual_seed(3)
    kv = torch.zeros(1, 8, 1, D_LATENT, dtype=torch.float64)
    new = torch.randn(1, 2, 1, D_LATENT, dtype=torch.float64, generator=gen)
    q = torch.randn(1, 2, 4, D_LATENT, dtype=torch.float64, generator=gen)
    with pytest.raises(ValueError, match="v_new must be k_new's first columns"):
        attn.with_kvcache(q, kv, kv[..., :D_V], 3, new, new[..., :D_V].clone())
    assert not kv.any()
    a = attn.with_kvcache(q, kv, kv[..., :D_V], 3, new)  # v_new None
    assert torch.equal(kv[0, 3:5], new[0])
    kv2 = torch.zeros_like(kv)
    b = attn.with_kvcache(q, kv2, kv2[..., :D_V], 3, new, new[..., :D_V])
    assert torch.equal(kv2, kv)
    assert_close(a, b, 0.0, "v_new None vs k_new's view")
