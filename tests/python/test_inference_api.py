"""The inference entry points (attention_engine/inference.py): packed varlen sequences and a KV
cache, contiguous and paged, against the independent oracle of conftest.py in float64 (CPU:
the reference executor), and on the GPU the fused kernels against float64 (marked gpu).

The rule under test: the mods see positions within the sequence (b = the sequence, the queries
its last tokens), so varlen equals one call per sequence, and decoding token by token equals
the full forward."""
import pytest
import torch

import attention_engine as ae
from attention_engine import mods
from conftest import assert_close, oracle

H_BIAS = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)  # per sequence: b must be the sequence


def _bias_by_sequence(score, b, h, q_idx, kv_idx):
    return score + H_BIAS[b]


_KEY_BIAS = torch.linspace(-1.0, 1.0, 17, dtype=torch.float64)  # the longest key count below


def _bias_by_key(score, b, h, q_idx, kv_idx):
    """A captured tensor indexed by kv_idx: masked pairs must index in range too."""
    return score + _KEY_BIAS[kv_idx]


VARIANTS = {
    "causal": (None, mods.causal),
    "bias_by_key": (_bias_by_key, mods.causal),
    "alibi": (mods.alibi(mods.alibi_slopes(4)), mods.causal),
    "softcap_window": (mods.softcap(5.0), mods.sliding_window(6)),
    "bias_by_sequence": (_bias_by_sequence, None),
}


def _seq_oracle(q, k, v, score_mod, mask_mod, b):
    """One sequence ([1, H, L, D] tensors), its queries the last tokens, as sequence b."""
    lq, lk = q.shape[2], k.shape[2]
    qf = torch.cat([q.new_zeros(1, q.shape[1], lk - lq, q.shape[3]), q], 2)
    sm = None if score_mod is None else (lambda s, bb, h, qi, ki: score_mod(s, bb + b, h, qi, ki))
    mm = None if mask_mod is None else (lambda bb, h, qi, ki: mask_mod(bb + b, h, qi, ki))
    out, lse = oracle(qf, k, v, sm, mm)
    return out[:, :, lk - lq:], lse[:, :, lk - lq:]


def _packed(lengths, heads, d, seed, dtype=torch.float64, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(lengths), heads, d, dtype=dtype, generator=gen)
    return x.to(device).requires_grad_()


def _cu(lengths, device="cpu"):
    return torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32,
                        device=device)


@pytest.fixture(params=["kernel", "padded", "packed"])
def varlen_route(request, monkeypatch):
    """varlen's three routes (inference._varlen_route): the attention_varlen op (the kernels
    address each sequence's rows), padded into a batch, or the sequences back to back in one
    batch row with each query masked to its own sequence."""
    monkeypatch.setenv("AE_VARLEN", request.param)
    return request.param


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("lens", [([5, 17, 1, 9], None), ([3, 7, 2], [8, 7, 5])],
                         ids=["self", "fewer_queries"])
def test_varlen_equals_one_call_per_sequence(name, lens, varlen_route):
    score_mod, mask_mod = VARIANTS[name]
    lq, lk = lens[0], lens[1] or lens[0]
    attn = ae.compile(score_mod, mask_mod)
    q, k, v = _packed(lq, 4, 8, 0), _packed(lk, 2, 8, 1), _packed(lk, 2, 8, 2)
    out, lse = attn.varlen(q, k, v, _cu(lq), _cu(lk), max(lq), max(lk), return_lse=True)
    assert out.shape == (sum(lq), 4, 8) and lse.shape == (4, sum(lq))
    dout = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), dout)

    outs, lses = [], []
    cq, ck = _cu(lq).tolist(), _cu(lk).tolist()
    for i in range(len(lq)):
        as_bhsd = lambda x, c: x[c[i]:c[i + 1]].transpose(0, 1).unsqueeze(0)
        o, l_ = _seq_oracle(as_bhsd(q, cq), as_bhsd(k, ck), as_bhsd(v, ck), score_mod, mask_mod, i)
        outs.append(o[0].transpose(0, 1))
        lses.append(l_[0])
    ref = torch.cat(outs)
    assert_close(out, ref, 1e-10, "out")
    ref_lse = torch.cat(lses, 1)
    fin = torch.isfinite(ref_lse)
    assert torch.equal(fin, torch.isfinite(lse))
    assert_close(lse[fin].double(), ref_lse[fin], 1e-5, "lse")
    want = torch.autograd.grad(ref, (q, k, v), dout)
    for what, a, b in zip(("dq", "dk", "dv"), got, want):
        assert_close(a, b, 1e-10, what)


def test_varlen_op_checks_its_inputs_and_gives_shapes():
    """The attention_varlen op (the kernel route's): tokens-first outputs (lse [Hq, total_q]),
    fake-tensor shapes for torch.compile, and clear errors: int32 lengths only, and a variant
    whose mask bounds the keys by the sequences' lengths (the positions rewrite's)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from attention_engine import _C
    from attention_engine.inference import _positioned
    from attention_engine.ops import varlen_op
    attn = ae.compile(mask_mod=mods.causal)
    lens = [3, 5]
    q, k, v = (_packed(lens, h, 8, s).detach() for s, h in ((0, 4), (1, 2), (2, 2)))
    cu = _cu(lens)
    lt = torch.tensor(lens)
    key = _positioned(attn).key
    buffers = [torch.zeros(2, dtype=torch.long), lt]
    out, lse = varlen_op(q, k, v, buffers, key, 0.3, cu, cu, 5, 5)
    assert out.shape == (8, 4, 8) and lse.shape == (4, 8) and out.is_contiguous()
    with FakeTensorMode() as mode:
        fq, fk, fv = (mode.from_tensor(x) for x in (q, k, v))
        fo, fl = varlen_op(fq, fk, fv, [mode.from_tensor(b) for b in buffers], key, 0.3,
                           mode.from_tensor(cu), mode.from_tensor(cu), 5, 5)
        assert fo.shape == (8, 4, 8) and fl.shape == (4, 8)
    with pytest.raises(TypeError, match="int32"):
        varlen_op(q, k, v, buffers, key, 0.3, cu.long(), cu, 5, 5)
    with pytest.raises(ValueError, match="bound the keys"):
        varlen_op(q, k, v, [], attn._key, 0.3, cu, cu, 5, 5)
    with pytest.raises(ValueError, match="\\[total_q, Hq, D\\]"):
        varlen_op(q[None], k, v, buffers, key, 0.3, cu, cu, 5, 5)
    assert _C.varlen_backend_for(q, k, v, buffers, key, cu, cu, 5, 5).startswith("reference")


def test_varlen_kernel_route_leaves_custom_norms_and_deterministic_to_the_packed_one(monkeypatch):
    """AE_VARLEN=kernel runs the attention_varlen op, except for a custom normalization (the
    op's padded backward needs an lse that empties a padding row, which such a statistic has
    not) and deterministic=True (the packed route's backward takes the flag): those run as
    one batch row, and still equal one call per sequence."""
    from attention_engine import inference
    from attention_engine.ops import varlen_op
    ops = []
    real = inference.run_op
    monkeypatch.setattr(inference, "run_op",
                        lambda op, *a, **kw: ops.append(op is varlen_op) or real(op, *a, **kw))
    monkeypatch.setenv("AE_VARLEN", "kernel")
    lens = [3, 5]
    q, k, v = (_packed(lens, 2, 8, s) for s in range(3))
    for attn, want in ((ae.compile(mask_mod=mods.causal), True),
                       (ae.compile(mask_mod=mods.causal, normalize=ae.normalizers.retention), False),
                       (ae.compile(mask_mod=mods.causal, deterministic=True), False)):
        ops.clear()
        out = attn.varlen(q, k, v, _cu(lens), _cu(lens))
        assert ops == [want]
        ref = torch.cat([attn(x[None].transpose(1, 2), y[None].transpose(1, 2),
                              z[None].transpose(1, 2))[0].transpose(0, 1)
                         for x, y, z in zip(q.split(lens), k.split(lens), v.split(lens))])
        assert_close(out, ref, 1e-10, "out")
        torch.autograd.grad(out.sum(), (q, k, v))  # (the backward of each route runs)


def test_varlen_rejects_bad_lengths():
    attn = ae.compile(mask_mod=mods.causal)
    q = k = v = torch.randn(8, 2, 4)
    good = torch.tensor([0, 3, 8])
    cases = [
        (torch.tensor([1, 3, 8]), good, "start at 0"),
        (torch.tensor([0, 5, 3, 8]), torch.tensor([0, 2, 4, 8]), "never decrease"),
        (torch.tensor([0, 3, 7]), good, "end at the token count 8"),
        (torch.tensor([0, 3, 8]), torch.tensor([0, 8]), r"n \+ 1"),
        (torch.tensor([0.0, 3, 8]), good, "int32 or int64"),
    ]
    for cq, ck, msg in cases:
        with pytest.raises(ValueError, match=msg):
            attn.varlen(q, k, v, cq, ck)
    with pytest.raises(ValueError, match="at most as many as keys"):
        attn.varlen(q, k[:6], v[:6], good, torch.tensor([0, 2, 6]))
    with pytest.raises(ValueError, match="max_seqlen_q=4 is less than the longest"):
        attn.varlen(q, k, v, good, good, max_seqlen_q=4)
    with pytest.raises(ValueError, match=r"\[total_q, Hq, D\]"):
        attn.varlen(q[None], k, v, good, good)


def _paged(cache_len, page_size, batch, heads, d, seed):
    """An empty paged cache with each sequence's pages shuffled over the pool."""
    pages_per_seq = -(-cache_len // page_size)
    n_pages = batch * pages_per_seq + 3
    perm = torch.randperm(n_pages, generator=torch.Generator().manual_seed(seed))[:batch * pages_per_seq]
    table = perm.view(batch, pages_per_seq).to(torch.int32)
    kc = torch.full((n_pages, page_size, heads, d), float("nan"), dtype=torch.float64)
    return kc, kc.clone(), table


@pytest.mark.parametrize("name", ["causal", "alibi", "softcap_window"])
@pytest.mark.parametrize("page_size", [None, 4, 16])
def test_decoding_token_by_token_equals_the_full_forward(name, page_size):
    score_mod, mask_mod = VARIANTS[name]
    attn = ae.compile(score_mod, mask_mod)
    B, T, HQ, HKV, D, prefill = 2, 21, 4, 1, 8, 6
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(B, T, h, D, dtype=torch.float64, generator=gen) for h in (HQ, HKV, HKV))
    full = attn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)

    if page_size is None:
        kc = torch.full((B, 32, HKV, D), float("nan"), dtype=torch.float64)
        vc, table = kc.clone(), None
    else:
        kc, vc, table = _paged(32, page_size, B, HKV, D, seed=4)
    # Ragged prefill through the cache, one sequence per call (its batch-of-one view of the
    # cache), then one token per step for both, each at its own position.
    prefills = [prefill, prefill - 3]
    for b, n in enumerate(prefills):
        kb, vb, tb = (kc, vc, table[b:b + 1]) if table is not None else (kc[b:b + 1], vc[b:b + 1], None)
        out = attn.with_kvcache(q[b:b + 1, :n], kb, vb, 0, k[b:b + 1, :n], v[b:b + 1, :n], tb)
        assert_close(out, full[b:b + 1, :n], 1e-10, "prefill")
    lens = torch.tensor(prefills, dtype=torch.int32)
    rows = torch.arange(B)[:, None]
    while lens.max() < T:
        idx = lens[:, None].long()
        qt, kt, vt = (x[rows, idx] for x in (q, k, v))
        out, lse = attn.with_kvcache(qt, kc, vc, lens, kt, vt, table, return_lse=True)
        assert out.shape == (B, 1, HQ, D) and lse.shape == (B, HQ, 1)
        assert_close(out, full[rows, idx], 1e-10, f"tokens {idx.flatten().tolist()}")
        lens += 1


def test_paged_cache_is_written_in_place_and_speculative_queries_are_the_last_tokens():
    attn = ae.compile(mods.alibi(mods.alibi_slopes(2)), mods.causal)
    B, T, H, D, ps = 2, 19, 2, 8, 4
    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(B, T, H, D, dtype=torch.float64, generator=gen) for _ in range(3))
    kc, vc, table = _paged(24, ps, B, H, D, seed=6)
    attn.with_kvcache(q[:, :15], kc, vc, torch.zeros(B, dtype=torch.int64), k[:, :15], v[:, :15], table)
    for b in range(B):
        for pos in (0, 5, 14):
            page = table[b, pos // ps].item()
            assert torch.equal(kc[page, pos % ps], k[b, pos]) and torch.equal(vc[page, pos % ps], v[b, pos])
    # Four speculative tokens at once equal the full forward's last four rows.
    out = attn.with_kvcache(q[:, 15:], kc, vc, 15, k[:, 15:], v[:, 15:], table)
    full = attn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    assert_close(out, full[:, 15:], 1e-10, "Sq = 4")
    # Without new tokens the queries are the last Sq cached ones.
    out = attn.with_kvcache(q[:, 17:], kc, vc, torch.tensor([T, T]), block_table=table)
    assert_close(out, full[:, 17:], 1e-10, "no k_new")


def test_kvcache_rejects_bad_inputs():
    attn = ae.compile(mask_mod=mods.causal)
    q = torch.randn(2, 1, 2, 8)
    kc, vc = torch.zeros(2, 16, 2, 8), torch.zeros(2, 16, 2, 8)
    k1 = torch.randn(2, 1, 2, 8)
    with pytest.raises(ValueError, match="does not fit the cache's 16 positions"):
        attn.with_kvcache(q, kc, vc, torch.tensor([3, 16]), k1, k1)
    with pytest.raises(ValueError, match="has 0 tokens but 1 queries"):
        attn.with_kvcache(q, kc, vc, torch.tensor([3, 0]))
    with pytest.raises(ValueError, match="k_new and v_new go together"):
        attn.with_kvcache(q, kc, vc, 3, k1)
    with pytest.raises(ValueError, match="3 entries for a batch of 2"):
        attn.with_kvcache(q, kc, vc, torch.tensor([3, 4, 5]))
    with pytest.raises(ValueError, match="k_cache has batch 3"):
        attn.with_kvcache(q, torch.zeros(3, 16, 2, 8), torch.zeros(3, 16, 2, 8), 3)
    pages = torch.zeros(5, 4, 2, 8)
    with pytest.raises(ValueError, match="page indices outside"):
        attn.with_kvcache(q, pages, pages.clone(), 6, block_table=torch.tensor([[0, 9], [1, 2]], dtype=torch.int32))
    with pytest.raises(ValueError, match="block_table must be an int32"):
        attn.with_kvcache(q, pages, pages.clone(), 6, block_table=torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match=r"\[B, Sq, Hq, D\]"):
        attn.with_kvcache(q[0], kc, vc, 3)


# ---- the fused kernels (GPU) ------------------------------------------------------------


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-12)).item()


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["causal", "alibi", "softcap_window"])
def test_varlen_on_the_kernels(name, varlen_route):
    score_mod, mask_mod = VARIANTS[name]
    if name == "alibi":  # 8 query heads, the slopes where q is
        score_mod = mods.alibi(mods.alibi_slopes(8, device="cuda"))
    attn = ae.compile(score_mod, mask_mod)
    lens = [1, 17, 1000, 4097, 300]
    q, k, v = (_packed(lens, h, 64, s, torch.bfloat16, "cuda") for s, h in ((0, 8), (1, 2), (2, 2)))
    cu = _cu(lens, "cuda")
    out = attn.varlen(q, k, v, cu, cu)
    dout = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), dout)
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = attn.varlen(q64, k64, v64, cu, cu)  # float64: the reference executor
    want = torch.autograd.grad(ref, (q64, k64, v64), dout.double())
    assert _rel(out, ref) < 2e-2
    for a, b in zip(got, want):
        assert _rel(a, b) < 3e-2


@pytest.mark.gpu
@pytest.mark.parametrize("where", ["cuda", "cpu"])
def test_varlen_unchecked_and_host_lengths_on_the_kernels(where, varlen_route):
    """cu_seqlens on the GPU with check_lengths=False (nothing read back), or on the CPU
    (checked there, copied over): the checked call's output, bit for bit, and its gradients
    (up to the order of dQ's atomic additions)."""
    attn = ae.compile(mods.softcap(5.0), mods.causal)
    lens = [3, 700, 129, 64]
    q, k, v = (_packed(lens, h, 64, s, torch.bfloat16, "cuda") for s, h in ((0, 4), (1, 2), (2, 2)))
    cu = _cu(lens, "cuda")
    out = attn.varlen(q, k, v, cu, cu)
    dout = torch.randn_like(out)
    want = (out,) + torch.autograd.grad(out, (q, k, v), dout)
    if where == "cuda":
        got = attn.varlen(q, k, v, cu, cu, 700, 700, check_lengths=False)
    else:
        got = attn.varlen(q, k, v, _cu(lens).pin_memory(), _cu(lens))
    got = (got,) + torch.autograd.grad(got, (q, k, v), dout)
    assert torch.equal(got[0], want[0])
    for a, b in zip(got[1:], want[1:]):
        assert _rel(a, b) < 1e-2


_LENGTHS_CASES = (
    [(name, 4, sq, None) for name in ("plain", "causal", "alibi", "softcap", "window", "bias")
     for sq in (1, 4, 64)]
    + [(name, 4, 1, splits) for name in ("plain", "causal") for splits in ("1", "2", "1000")]
    + [("plain", group, sq, None) for group in (1, 8) for sq in (1, 64)])


@pytest.mark.gpu
@pytest.mark.parametrize("case", _LENGTHS_CASES, ids=lambda c: "-".join(map(str, c)))
def test_kvcache_lengths_layout_on_the_kernels(case, monkeypatch):
    """A contiguous cache whose slots past each length hold NaN (never written): the forward
    walks each sequence's own keys (the per-batch key lengths layout) and matches float64 on
    the same cache with zeros there; split counts forced to 1, 2 and one per block."""
    name, group, sq, splits = case
    if splits:
        monkeypatch.setenv("AE_KV_SPLITS", splits)
    HKV, D, cap = 2, 128, 4352
    HQ = HKV * group
    mod = {"plain": (None, None), "causal": (None, mods.causal),
           "alibi": (mods.alibi(mods.alibi_slopes(HQ, device="cuda")), mods.causal),
           "softcap": (mods.softcap(20.0), None), "window": (None, mods.sliding_window(256)),
           "bias": (mods.relative_bias(torch.randn(HQ, 65, device="cuda"), 32), mods.causal)}[name]
    attn = ae.compile(*mod)
    lens = torch.tensor([1, 17, 1000, 4097], device="cuda").clamp(min=sq)
    if sq == 1:
        lens = lens.to(torch.int32)  # int32 lengths reach the kernels as they are
    B = lens.numel()
    gen = torch.Generator(device="cuda").manual_seed(0)
    kc = torch.randn(B, cap, HKV, D, device="cuda", dtype=torch.bfloat16, generator=gen)
    vc = torch.randn(B, cap, HKV, D, device="cuda", dtype=torch.bfloat16, generator=gen)
    past = torch.arange(cap, device="cuda")[None, :] >= lens[:, None]
    kc[past], vc[past] = float("nan"), float("nan")
    q = torch.randn(B, sq, HQ, D, device="cuda", dtype=torch.bfloat16, generator=gen)
    with torch.no_grad():
        kz, vz = (x.double().masked_fill(past[:, :, None, None], 0.0) for x in (kc, vc))
        ref, ref_lse = attn.with_kvcache(q.double(), kz, vz, lens, return_lse=True)
        for check in (True, False):
            out, lse = attn.with_kvcache(q, kc, vc, lens, return_lse=True, check_lengths=check)
            assert torch.isfinite(out).all()
            assert _rel(out, ref) < 2e-2, check
            assert (lse.double() - ref_lse).abs().max().item() < 2e-2
    # The forward took the bound as its layout (not a mask with a block-state pass).
    from attention_engine import _C
    from attention_engine.gqa_pack import pack_shape
    from attention_engine.inference import _positioned
    pack = pack_shape(HQ, HKV, sq)
    qp = q.transpose(1, 2)
    if pack:
        qp = qp.reshape(B, HKV, group * sq, D)
    backend = _C.backend_for(qp, kc.transpose(1, 2), vc.transpose(1, 2),
                             list(attn.buffers) + [lens], _positioned(attn, pack, sq).key)
    assert "per-batch key lengths" in backend, backend


def _mods_for(name, hq):
    return {"plain": (None, None), "causal": (None, mods.causal),
            "alibi": (mods.alibi(mods.alibi_slopes(hq, device="cuda")), mods.causal),
            "softcap": (mods.softcap(20.0), None), "window": (None, mods.sliding_window(256)),
            "bias": (mods.relative_bias(torch.randn(hq, 65, device="cuda"), 32), mods.causal),
            "doc": (None, mods.document_mask(torch.arange(4352, device="cuda") // 700))}[name]


_VARLEN_CASES = (
    [(name, "sm90", 4, "self", None) for name in ("plain", "causal", "alibi", "softcap", "window",
                                                  "bias", "doc")]
    + [(name, "sm90", 4, "fewer", None) for name in ("plain", "causal", "window")]
    + [(name, "sm80", 4, kind, None) for name in ("plain", "causal", "alibi")
       for kind in ("self", "fewer")]
    + [("causal", "sm90", group, "self", None) for group in (1, 8)]
    + [(name, "sm90", 4, "decode", splits) for name in ("plain", "causal")
       for splits in ("1", "2", "1000")])


@pytest.mark.gpu
@pytest.mark.parametrize("case", _VARLEN_CASES, ids=lambda c: "-".join(map(str, c)))
def test_varlen_layout_on_the_kernels(case, monkeypatch):
    """varlen's kernel route on the kernels' packed-sequence layout (no padding): ragged
    lengths 1, 17, 1000, 4097 (and an empty sequence), as many queries as keys, fewer, or one
    (decode rows, split counts forced); equal to float64, forward and backward, and no fallback
    warning (the layout ran)."""
    name, family, group, kind, splits = case
    if family == "sm80":
        monkeypatch.setenv("AE_DISABLE_SM90", "1")
    if splits:
        monkeypatch.setenv("AE_KV_SPLITS", splits)
    monkeypatch.setenv("AE_VARLEN", "kernel")
    HKV, D = 2, 128
    HQ = HKV * group
    attn = ae.compile(*_mods_for(name, HQ))
    lk = [1, 17, 1000, 0, 4097, 300]
    lq = {"self": lk, "fewer": [1, 5, 999, 0, 2000, 1], "decode": [min(1, n) for n in lk]}[kind]
    gen = torch.Generator(device="cuda").manual_seed(0)
    mk = lambda lens, h: torch.randn(sum(lens), h, D, device="cuda", dtype=torch.bfloat16,
                                     generator=gen).requires_grad_()
    q, k, v = mk(lq, HQ), mk(lk, HKV), mk(lk, HKV)
    cq, ck = _cu(lq, "cuda"), _cu(lk, "cuda")
    out, lse = attn.varlen(q, k, v, cq, ck, return_lse=True)
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref, ref_lse = attn.varlen(q64, k64, v64, cq, ck, return_lse=True)  # float64: the reference
    assert _rel(out, ref) < 2e-2
    fin = torch.isfinite(ref_lse)
    assert torch.equal(fin, torch.isfinite(lse))
    assert (lse.double()[fin] - ref_lse[fin]).abs().max().item() < 2e-2
    if kind != "decode":
        dout = torch.randn_like(out)
        got = torch.autograd.grad(out, (q, k, v), dout)
        want = torch.autograd.grad(ref, (q64, k64, v64), dout.double())
        for what, a, b in zip(("dq", "dk", "dv"), got, want):
            assert _rel(a, b) < 3e-2, what
    # The forward ran on the packed-sequence layout (not padded into a batch).
    from attention_engine import _C
    from attention_engine.inference import _positioned
    lq_t, lk_t = (cq[1:] - cq[:-1]).long(), (ck[1:] - ck[:-1]).long()
    backend = _C.varlen_backend_for(q, k, v, list(attn.buffers) + [lk_t - lq_t, lk_t],
                                    _positioned(attn).key, cq, ck, max(lq), max(lk))
    assert backend == f"{family} (packed sequences)", backend


_PAGED_CASES = ([(name, ps, 4, sq) for name in ("plain", "causal", "alibi", "window")
                 for ps in (16, 64, 256) for sq in (1, 4)]
                + [("causal", 64, 4, 64), ("plain", 16, 1, 1), ("plain", 256, 8, 4),
                   ("causal", 8, 4, 1)])  # page 8: 16 boxes per tile of keys


def _gpu_class():
    """The device class of the GPU (kernel_source's name for its planner presets)."""
    cap = torch.cuda.get_device_capability()
    return "h200" if cap[0] == 9 else "ada" if cap == (8, 9) else "a100"


def _paged_case(name, ps, group, sq, gen, lens=(1, 17, 1000, 4097)):
    """A contiguous cache [B, cap, HKV, D] with NaN past each length, the same keys in shuffled
    pages of a pool with spare NaN pages, and a table whose entries past each sequence's pages
    are -1 or past the pool (the kernels never read them: zeros). Returns the compiled
    attention, q, (kc, vc), (kp, vp), the table and the lengths."""
    HKV, D = 2, 128
    HQ = HKV * group
    attn = ae.compile(*_mods_for(name, HQ))
    lens = torch.tensor(lens, device="cuda").clamp(min=sq)
    B, cap = lens.numel(), 4352
    per = -(-cap // ps)
    cap = per * ps
    kc = torch.randn(B, cap, HKV, D, device="cuda", dtype=torch.bfloat16, generator=gen)
    vc = torch.randn(B, cap, HKV, D, device="cuda", dtype=torch.bfloat16, generator=gen)
    past = torch.arange(cap, device="cuda")[None, :] >= lens[:, None]
    kc[past], vc[past] = float("nan"), float("nan")
    pool = B * per + 3  # spare pages, NaN
    perm = torch.randperm(B * per, device="cuda", generator=gen)
    table = perm.view(B, per).to(torch.int32)
    kp = torch.full((pool, ps, HKV, D), float("nan"), device="cuda", dtype=torch.bfloat16)
    vp = kp.clone()
    kp[perm], vp[perm] = kc.reshape(B * per, ps, HKV, D), vc.reshape(B * per, ps, HKV, D)
    used = -(-lens // ps)  # pages each sequence uses
    unused = torch.arange(per, device="cuda")[None, :] >= used[:, None]
    table[unused] = torch.where(torch.rand(unused.sum().item(), device="cuda", generator=gen) < 0.5,
                                -1, pool + 7).to(torch.int32)
    q = torch.randn(B, sq, HQ, D, device="cuda", dtype=torch.bfloat16, generator=gen)
    return attn, q, (kc, vc), (kp, vp), table, lens


def _paged_plan(attn, q, pages, table, lens, hkv):
    """What the attention_paged op runs for with_kvcache(q, *pages, lens, block_table=table)
    and the forward's spec (describe) on this GPU's class."""
    from attention_engine import _C
    from attention_engine.gqa_pack import pack_shape
    from attention_engine.inference import _positioned
    B, sq, hq, d = q.shape
    pack = pack_shape(hq, hkv, sq)
    qp = q.transpose(1, 2)
    if pack:
        qp = qp.reshape(B, hkv, (hq // hkv) * sq, d)
    positioned = _positioned(attn, pack, sq)
    buffers = list(attn.buffers) + [lens]
    backend = _C.paged_backend_for(qp, pages[0].transpose(1, 2), pages[1].transpose(1, 2),
                                   buffers, positioned.key, table)
    info = positioned.variant.kernel_source(
        "fwd", d, d, True, [str(t.dtype)[6:] for t in attn.buffers] + [str(lens.dtype)[6:]],
        device=_gpu_class(), q_len=qp.shape[2], kv_lengths=True, page_size=pages[0].shape[1])
    return backend, info["describe"]


@pytest.mark.gpu
@pytest.mark.parametrize("case", _PAGED_CASES, ids=lambda c: "-".join(map(str, c)))
def test_paged_cache_read_in_place_on_the_kernels(case):
    """Without autograd the sm90 forward (elsewhere the sm80 family) reads a paged cache
    through its page table (no gather): shuffled pages, NaN in every slot no sequence owns,
    table entries past each sequence's pages set to -1 or past the pool (never dereferenced:
    TMA loads zeros); the result matches float64 on the contiguous cache, with and without the
    host check."""
    name, ps, group, sq = case
    gen = torch.Generator(device="cuda").manual_seed(1)
    attn, q, (kc, vc), (kp, vp), table, lens = _paged_case(name, ps, group, sq, gen)
    past = torch.arange(kc.shape[1], device="cuda")[None, :] >= lens[:, None]
    with torch.no_grad():
        kz, vz = (x.double().masked_fill(past[:, :, None, None], 0.0) for x in (kc, vc))
        ref = attn.with_kvcache(q.double(), kz, vz, lens)
        for check in (True, False):
            out = attn.with_kvcache(q, kp, vp, lens, block_table=table, check_lengths=check)
            assert torch.isfinite(out).all(), check
            assert _rel(out, ref) < 2e-2, check
    # The plan the op makes: the sm90 forward on pages (describe's " page<ps>").
    backend, describe = _paged_plan(attn, q, (kp, vp), table, lens, kc.shape[2])
    family = "sm90" if torch.cuda.get_device_capability()[0] == 9 else "sm80"
    assert backend == f"{family} (pages in place)", backend
    assert f" page{ps}" in describe, describe


# The sm80 family on pages (sm80/tile_io.h load_paged: each row's cp.async at its page): the
# prefill forward (forced on Hopper by AE_DISABLE_SM90; on A100 / Ada the only family) and the
# decode template (AE_DECODE, at most 16 query rows per KV head: GQA groups packed), ragged
# lengths, page sizes that tiles divide (16, 64, 256), that no tile divides (24) and 8, GQA
# groups 1, 4, 8, masked, ALiBi, a captured-tensor bias; with and without the host check.
_PAGED80_CASES = ([(name, ps, 4, sq, template) for name in ("plain", "causal", "alibi", "bias")
                   for ps in (16, 64, 256) for sq, template in ((1, "decode"), (4, "decode"),
                                                               (64, "prefill"))]
                  + [("causal", 24, 4, 1, "decode"), ("causal", 24, 4, 64, "prefill"),
                     ("window", 8, 4, 4, "decode"), ("window", 8, 4, 64, "prefill"),
                     ("plain", 16, 1, 1, "decode"), ("causal", 64, 8, 1, "decode"),
                     ("causal", 16, 1, 4, "prefill"), ("alibi", 256, 8, 64, "prefill")])


@pytest.mark.gpu
@pytest.mark.parametrize("case", _PAGED80_CASES, ids=lambda c: "-".join(map(str, c)))
def test_paged_cache_read_in_place_on_the_sm80_family(case, monkeypatch):
    name, ps, group, sq, template = case
    monkeypatch.setenv("AE_DISABLE_SM90", "1")
    monkeypatch.setenv("AE_DECODE", "1" if template == "decode" else "0")
    gen = torch.Generator(device="cuda").manual_seed(3)
    attn, q, (kc, vc), (kp, vp), table, lens = _paged_case(name, ps, group, sq, gen)
    past = torch.arange(kc.shape[1], device="cuda")[None, :] >= lens[:, None]
    with torch.no_grad():
        kz, vz = (x.double().masked_fill(past[:, :, None, None], 0.0) for x in (kc, vc))
        ref, ref_lse = attn.with_kvcache(q.double(), kz, vz, lens, return_lse=True)
        for check in (True, False):
            out, lse = attn.with_kvcache(q, kp, vp, lens, block_table=table, return_lse=True,
                                         check_lengths=check)
            assert torch.isfinite(out).all(), check
            assert _rel(out, ref) < 2e-2, check
            assert (lse.double() - ref_lse).abs().max().item() < 2e-2, check
    backend, describe = _paged_plan(attn, q, (kp, vp), table, lens, kc.shape[2])
    assert backend == "sm80 (pages in place)", backend
    assert f" page{ps}" in describe and (" dec" in describe) == (template == "decode"), describe


@pytest.mark.gpu
@pytest.mark.parametrize("family", ["sm80", "sm90"])
def test_bad_page_entries_within_a_sequence_read_zeros(family, monkeypatch):
    """Unchecked, table entries outside the pool within a sequence's pages fault nowhere: the
    kernels read those rows' keys and values as zeros (sm80: cp.async's zero fill; sm90: TMA's
    out-of-bounds fill), so the result is float64's on a cache with zeros there."""
    if family == "sm90" and torch.cuda.get_device_capability()[0] != 9:
        pytest.skip("the sm90 forward: Hopper")
    monkeypatch.setenv("AE_DISABLE_SM90", "1" if family == "sm80" else "0")
    ps = 64
    gen = torch.Generator(device="cuda").manual_seed(4)
    attn, q, (kc, vc), (kp, vp), table, lens = _paged_case("alibi", ps, 4, 1, gen)
    bad = table.clone()
    bad[2, 3], bad[3, 0], bad[3, 40] = -1, kp.shape[0], 2**31 - 1  # within lengths 1000, 4097
    past = torch.arange(kc.shape[1], device="cuda")[None, :] >= lens[:, None]
    zero = past.clone()
    for b, col in ((2, 3), (3, 0), (3, 40)):
        zero[b, col * ps:(col + 1) * ps] = True
    with torch.no_grad():
        kz, vz = (x.double().masked_fill(zero[:, :, None, None], 0.0) for x in (kc, vc))
        ref = attn.with_kvcache(q.double(), kz, vz, lens)
        out = attn.with_kvcache(q, kp, vp, lens, block_table=bad, check_lengths=False)
        assert torch.isfinite(out).all()
        assert _rel(out, ref) < 2e-2
        with pytest.raises(ValueError, match="page indices outside"):  # checked: refused
            attn.with_kvcache(q, kp, vp, lens, block_table=bad)
    backend, _ = _paged_plan(attn, q, (kp, vp), bad, lens, kc.shape[2])
    assert backend == f"{family} (pages in place)", backend


@pytest.mark.gpu
@pytest.mark.parametrize("paged", [False, True], ids=["contiguous", "paged"])
def test_unchecked_decode_step_replays_from_a_cuda_graph(paged):
    """check_lengths=False reads nothing back, so a decode step (append + attend) can be
    captured once and replayed with new lengths in place, as a serving loop does."""
    attn = ae.compile(mods.alibi(mods.alibi_slopes(8, device="cuda")), mods.causal)
    B, HKV, D, cap, ps = 3, 2, 128, 2048, 64
    gen = torch.Generator(device="cuda").manual_seed(2)
    mk = lambda *s: torch.randn(*s, device="cuda", dtype=torch.bfloat16, generator=gen)
    kc, vc = mk(B, cap, HKV, D), mk(B, cap, HKV, D)
    table = torch.arange(B * (cap // ps), device="cuda").view(B, -1).flip(1).to(torch.int32)
    kp, vp = (x.reshape(B * (cap // ps), ps, HKV, D)[table.flatten().argsort()] for x in (kc, vc))
    lens = torch.tensor([5, 700, 1500], device="cuda", dtype=torch.int32)
    q, kn, vn = mk(B, 1, 8, D), mk(B, 1, HKV, D), mk(B, 1, HKV, D)
    caches = (kp, vp) if paged else (kc, vc)
    extra = dict(block_table=table) if paged else {}
    step = lambda: attn.with_kvcache(q, *caches, lens, kn, vn, check_lengths=False, **extra)
    with torch.no_grad():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out = step()
        for n in ([9, 701, 1999], [100, 3, 2046]):
            lens.copy_(torch.tensor(n))
            q.copy_(mk(B, 1, 8, D))
            g.replay()
            want = attn.with_kvcache(q, *caches, lens, kn, vn, **extra)  # checked, eager
            assert _rel(out, want) < 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("page_size", [16, 64, 256])
def test_paged_decode_on_the_kernels(page_size):
    attn = ae.compile(mods.alibi(mods.alibi_slopes(8, device="cuda")), mods.causal)
    B, HQ, HKV, D, cap = 3, 8, 2, 128, 4352
    lens = torch.tensor([17, 1000, 4097], dtype=torch.int32, device="cuda")
    pages_per_seq = cap // page_size
    n_pages = B * pages_per_seq
    table = torch.randperm(n_pages, device="cuda").view(B, pages_per_seq).to(torch.int32)
    kc = torch.randn(n_pages, page_size, HKV, D, device="cuda", dtype=torch.bfloat16)
    vc = torch.randn_like(kc)
    for sq in (1, 4):
        q = torch.randn(B, sq, HQ, D, device="cuda", dtype=torch.bfloat16)
        out = attn.with_kvcache(q, kc, vc, lens, block_table=table)
        ref = attn.with_kvcache(q.double(), kc.double(), vc.double(), lens, block_table=table)
        assert _rel(out, ref) < 2e-2


def test_module_varlen_learns_its_captured_parameter(varlen_route):
    slopes = torch.nn.Parameter(torch.tensor([0.5, -0.25], dtype=torch.float64))
    module = ae.Attention(mods.alibi(slopes), mods.causal)
    lens = [4, 9]
    q, k, v = (_packed(lens, 2, 8, s) for s in range(3))
    out = module.varlen(q, k, v, _cu(lens), _cu(lens))
    (g,) = torch.autograd.grad(out.square().sum(), module.slopes)
    want = torch.zeros_like(g)
    cu = _cu(lens).tolist()
    for i in range(len(lens)):
        as_bhsd = lambda x: x[cu[i]:cu[i + 1]].transpose(0, 1).unsqueeze(0)
        o = module(as_bhsd(q), as_bhsd(k), as_bhsd(v))
        want += torch.autograd.grad(o.square().sum(), module.slopes)[0]
    assert_close(g, want, 1e-10, "d slopes")
    assert g.abs().sum() > 0


def test_padding_rows_keep_captured_indices_in_range(varlen_route):
    """Fewer queries than keys in one sequence, a mod indexing a tensor by q_idx: the padded
    rows of the shorter sequence must not index past it (review finding)."""
    pos_bias = torch.linspace(-1, 1, 10, dtype=torch.float64)
    score_mod = lambda s, b, h, q_idx, kv_idx: s + pos_bias[q_idx]
    attn = ae.compile(score_mod, mods.causal)
    lq, lk = [1, 10], [10, 10]
    q, k, v = _packed(lq, 2, 8, 0), _packed(lk, 2, 8, 1), _packed(lk, 2, 8, 2)
    out = attn.varlen(q, k, v, _cu(lq), _cu(lk))
    cq, ck = _cu(lq).tolist(), _cu(lk).tolist()
    for i in range(2):
        as_bhsd = lambda x, c: x[c[i]:c[i + 1]].transpose(0, 1).unsqueeze(0)
        o, _ = _seq_oracle(as_bhsd(q, cq), as_bhsd(k, ck), as_bhsd(v, ck), score_mod, mods.causal, i)
        assert_close(out[cq[i]:cq[i + 1]], o[0].transpose(0, 1), 1e-10, f"sequence {i}")


def test_kvcache_gradients_reach_the_new_tokens_and_bad_calls_leave_the_cache_alone():
    attn = ae.compile(mods.alibi(mods.alibi_slopes(2)), mods.causal)
    gen = torch.Generator().manual_seed(7)
    B, T, H, D = 2, 9, 2, 8
    q, k, v = (torch.randn(B, T, H, D, dtype=torch.float64, generator=gen) for _ in range(3))
    kc = torch.zeros(B, 16, H, D, dtype=torch.float64)
    vc = torch.zeros_like(kc)
    attn.with_kvcache(q[:, :6], kc, vc, 0, k[:, :6], v[:, :6])
    qn, kn, vn = (x[:, 6:].clone().requires_grad_() for x in (q, k, v))
    out = attn.with_kvcache(qn, kc, vc, 6, kn, vn)
    # Two steps on one cache, then backward through the first: no in-place trouble.
    q2 = torch.randn(B, 1, H, D, dtype=torch.float64, requires_grad=True)
    attn.with_kvcache(q2, kc, vc, 9, torch.zeros(B, 1, H, D, dtype=torch.float64),
                      torch.zeros(B, 1, H, D, dtype=torch.float64)).sum().backward()
    dout = torch.randn_like(out)
    got = torch.autograd.grad(out, (qn, kn, vn), dout)
    qf, kf, vf = (x.clone().requires_grad_() for x in (q, k, v))
    full = attn(qf.transpose(1, 2), kf.transpose(1, 2), vf.transpose(1, 2)).transpose(1, 2)[:, 6:]
    want = torch.autograd.grad(full, (qf, kf, vf), dout)
    assert_close(got[0], want[0][:, 6:], 1e-10, "dq")
    # The new tokens' gradients: the full forward's, at their positions, minus what earlier
    # queries (not in this call) add there; causal: none do.
    assert_close(got[1], want[1][:, 6:], 1e-10, "dk_new")
    assert_close(got[2], want[2][:, 6:], 1e-10, "dv_new")
    before = kc.clone()
    bad = [dict(q=qn.detach().float()), dict(q=torch.randn(B, 1, 3, D, dtype=torch.float64)),
           dict(q=torch.randn(B, 1, H, 4, dtype=torch.float64))]
    for case in bad:
        with pytest.raises(ValueError):
            attn.with_kvcache(case["q"], kc, vc, 10, kn.detach()[:, :1], vn.detach()[:, :1])
    with pytest.raises(ValueError, match="cache's dtype"):
        attn.with_kvcache(qn.detach()[:, :1], kc, vc, 10, kn.detach()[:, :1].float(), vn.detach()[:, :1])
    none = ae.compile(mods.sigmoid(0.0), normalize="none")
    with pytest.raises(ValueError, match="return_lse=True needs"):
        none.with_kvcache(qn.detach()[:, :1], kc, vc, 10, kn.detach()[:, :1], vn.detach()[:, :1],
                          return_lse=True)
    assert torch.equal(kc, before)


@pytest.mark.parametrize("name", ["causal", "softcap_window", "bias_by_sequence"])
def test_unchecked_lengths_read_nothing_back_and_agree(name, monkeypatch):
    """check_lengths=False: no host read of the lengths (tolist is not called), the same answer
    as the checked call, the new tokens appended; lengths past the cache are clamped into it
    (no out-of-bounds write), never an error."""
    attn = ae.compile(*VARIANTS[name])
    gen = torch.Generator().manual_seed(3)
    B, S, HQ, HKV, D = 3, 24, 4, 2, 8
    kc = torch.randn(B, S, HKV, D, dtype=torch.float64, generator=gen)
    vc = torch.randn(B, S, HKV, D, dtype=torch.float64, generator=gen)
    lens = torch.tensor([5, 17, 1])
    q = torch.randn(B, 2, HQ, D, dtype=torch.float64, generator=gen)
    kn, vn = (torch.randn(B, 2, HKV, D, dtype=torch.float64, generator=gen) for _ in range(2))
    k2, v2 = kc.clone(), vc.clone()
    with torch.no_grad():
        want = attn.with_kvcache(q, kc, vc, lens, kn, vn, return_lse=True)
        calls = []
        real_tolist = torch.Tensor.tolist
        monkeypatch.setattr(torch.Tensor, "tolist",
                            lambda self: calls.append(1) or real_tolist(self))
        got = attn.with_kvcache(q, k2, v2, lens, kn, vn, return_lse=True, check_lengths=False)
        assert not calls
        monkeypatch.undo()
        assert_close(got[0], want[0], 1e-12, "out")
        assert_close(got[1], want[1], 1e-12, "lse")
        assert torch.equal(k2, kc) and torch.equal(v2, vc)  # appended alike
        far = attn.with_kvcache(q, k2, v2, torch.tensor([5, 40, 1]), kn, vn, check_lengths=False)
        assert torch.isfinite(far).all()
        assert torch.equal(k2[1, -1], kn[1, -1])  # clamped: the last slot took the last token
    # Grad mode on, nothing requiring grad: still no host read.
    calls.clear()
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: calls.append(1) or real_tolist(self))
    attn.with_kvcache(q, k2, v2, lens, check_lengths=False)
    assert not calls
    monkeypatch.undo()
    with pytest.raises(ValueError, match="does not fit"):
        attn.with_kvcache(q, kc, vc, torch.tensor([5, 40, 1]), kn, vn)


def test_varlen_unchecked_lengths_read_nothing_back(varlen_route, monkeypatch):
    """varlen(check_lengths=False) with the maxima given: no host read of the lengths (tolist
    is not called), the checked call's answer and gradients on every route; without the
    maxima it is an error that says why."""
    attn = ae.compile(*VARIANTS["softcap_window"])
    lq, lk = [3, 1, 6], [5, 4, 6]
    q = _packed(lq, 4, 8, 0).requires_grad_()
    k, v = (_packed(lk, 2, 8, s).requires_grad_() for s in (1, 2))
    want = attn.varlen(q, k, v, _cu(lq), _cu(lk), return_lse=True)
    gw = torch.autograd.grad(want[0].sum(), (q, k, v))
    calls = []
    real_tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: calls.append(1) or real_tolist(self))
    got = attn.varlen(q, k, v, _cu(lq), _cu(lk), 6, 6, return_lse=True, check_lengths=False)
    gg = torch.autograd.grad(got[0].sum(), (q, k, v))
    assert not calls
    monkeypatch.undo()
    assert_close(got[0], want[0], 1e-12, "out")
    assert_close(got[1], want[1], 1e-12, "lse")
    for a, b, name in zip(gg, gw, "qkv"):
        assert_close(a, b, 1e-12, "d" + name)
    with pytest.raises(ValueError, match="needs max_seqlen_q and max_seqlen_k"):
        attn.varlen(q, k, v, _cu(lq), _cu(lk), 6, check_lengths=False)


@pytest.mark.parametrize("check", [True, False], ids=["checked", "unchecked"])
def test_paged_cache_without_autograd_takes_the_paged_op(check, monkeypatch):
    """Without autograd a paged cache goes to the attention_paged op (the kernels read pages
    in place; the reference gathers them): the contiguous cache's answer, new tokens written
    into their pages."""
    from attention_engine import inference
    calls = []
    real = inference.paged_op
    monkeypatch.setattr(inference, "paged_op", lambda *a: calls.append(1) or real(*a))
    attn = ae.compile(mods.alibi(mods.alibi_slopes(4)), mods.causal)
    gen = torch.Generator().manual_seed(5)
    B, ps, per, HKV, D = 2, 4, 5, 2, 8
    kc, vc = (torch.randn(B, ps * per, HKV, D, dtype=torch.float64, generator=gen) for _ in range(2))
    perm = torch.randperm(B * per, generator=gen)
    table = perm.view(B, per).to(torch.int32)
    kp, vp = torch.zeros(B * per, ps, HKV, D, dtype=torch.float64), torch.zeros(B * per, ps, HKV, D, dtype=torch.float64)
    kp[perm], vp[perm] = kc.reshape(B * per, ps, HKV, D), vc.reshape(B * per, ps, HKV, D)
    lens = torch.tensor([6, 13], dtype=torch.int32)  # int32 lengths stay int32 (no cast)
    q = torch.randn(B, 2, 4, D, dtype=torch.float64, generator=gen)
    kn, vn = (torch.randn(B, 2, HKV, D, dtype=torch.float64, generator=gen) for _ in range(2))
    with torch.no_grad():
        want = attn.with_kvcache(q, kc, vc, lens, kn, vn)
    # Grad mode on but nothing requires grad: the no-grad route all the same.
    got = attn.with_kvcache(q, kp, vp, lens, kn, vn, block_table=table, check_lengths=check)
    assert calls
    assert_close(got, want, 1e-12, "out")
    assert torch.equal(kp[perm].reshape(B, ps * per, HKV, D), kc)
    # The paged op has no backward: asked for one, it says so (no silent missing gradients).
    from attention_engine.inference import _positioned
    qg = q.transpose(1, 2).clone().requires_grad_()
    ref = _positioned(attn, None, 2)
    out, _ = real(qg, kp.transpose(1, 2), vp.transpose(1, 2), list(attn.buffers) + [lens + 2],
                  ref.key, 0.3, table)
    with pytest.raises(RuntimeError, match="has no backward"):
        out.sum().backward()
    with pytest.raises(ValueError, match="no pages"):
        real(q.transpose(1, 2), kp[:0].transpose(1, 2), vp[:0].transpose(1, 2),
             list(attn.buffers) + [lens + 2], ref.key, 0.3, table)
    # What the op runs (on the GPU: "<family> (pages in place)" or "gathered: <why>"); its checks.
    from attention_engine import _C
    args = (q.transpose(1, 2), kp.transpose(1, 2), vp.transpose(1, 2), list(attn.buffers) + [lens + 2],
            ref.key)
    assert _C.paged_backend_for(*args, table) == "reference: tensors on cpu"
    with pytest.raises(TypeError, match="int32"):
        _C.paged_backend_for(*args, table.long())


def test_positions_rewrite_bound_goes_to_the_layout():
    """with_kvcache's and varlen's rewrite (positions.py) writes the key bound so that the
    forward can take it as the per-batch key lengths layout (csrc/ir/length_bound.h), for
    every variant and with GQA packing."""
    from attention_engine import _C
    from attention_engine.gqa_pack import gqa_packed
    from attention_engine.positions import with_positions
    for score_mod, mask_mod in VARIANTS.values():
        attn = ae.compile(score_mod, mask_mod)
        n = len(attn.buffers)
        for trace, at in ((with_positions(attn._ref.trace_json), n + 1),
                          (gqa_packed(with_positions(attn._ref.trace_json), 4, 2), n + 1),
                          (with_positions(attn._ref.trace_json, 3), n),  # a cache's: q_start in-graph
                          (gqa_packed(with_positions(attn._ref.trace_json, 2), 4, 2), n)):
            v = _C.build_variant(trace)
            assert v.kv_lengths_buffer == at
            assert v.without_kv_lengths_text not in ("", v.canonical_text())
    # Without mods the bound was all the rewrite added that matters: no mask, no load left.
    plain = _C.build_variant(with_positions(ae.compile()._ref.trace_json))
    assert plain.kv_lengths_buffer == 1 and "load" not in plain.without_kv_lengths_text
    assert "const true" in plain.without_kv_lengths_text
    assert ae.compile().variant.kv_lengths_buffer == -1


@pytest.mark.parametrize("mask_mod", [None, mods.causal], ids=["no_mask", "causal"])
def test_no_keys_give_zeros_and_an_empty_lse(mask_mod, varlen_route):
    """A row with no keys at all (an empty cache, an empty sequence's padding): out 0, lse
    -inf, zero gradients, as for a row whose keys are all masked (was a reshape error)."""
    attn = ae.compile(mask_mod=mask_mod)
    q = torch.randn(1, 2, 4, 8, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 2, 0, 8, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 2, 0, 8, dtype=torch.float64, requires_grad=True)
    out, lse = attn(q, k, v, return_lse=True)
    assert torch.equal(out, torch.zeros_like(out)) and torch.isneginf(lse).all()
    dq, dk, dv = torch.autograd.grad(out.sum(), (q, k, v))
    assert torch.equal(dq, torch.zeros_like(q)) and dk.shape == k.shape and dv.shape == v.shape
    lens = [0, 3]  # varlen with an empty sequence
    qp, kp, vp = _packed(lens, 2, 8, 0), _packed(lens, 2, 8, 1), _packed(lens, 2, 8, 2)
    assert attn.varlen(qp, kp, vp, _cu(lens), _cu(lens)).shape == (3, 2, 8)
    empty = _packed([0, 0], 2, 8, 0)
    assert attn.varlen(empty, empty, empty, _cu([0, 0]), _cu([0, 0])).shape == (0, 2, 8)


def test_gqa_packing_keeps_heads_positions_and_gradients():
    """Decode with grouped-query attention packs a group's query heads into one head's rows
    (gqa_pack.py): the mods must still see each query's own head and position, and gradients
    (queries, new keys, a learnable per-head tensor) must equal the unpacked full forward's."""
    slopes = torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=torch.float64, requires_grad=True)
    attn = ae.compile(mods.alibi(slopes), mods.causal)
    B, T, HQ, HKV, D, n_new = 2, 9, 4, 2, 8, 3
    gen = torch.Generator().manual_seed(11)
    q, k, v = (torch.randn(B, T, h, D, dtype=torch.float64, generator=gen).requires_grad_()
               for h in (HQ, HKV, HKV))
    full = attn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    dout = torch.randn(B, n_new, HQ, D, dtype=torch.float64, generator=gen)
    want = torch.autograd.grad(full[:, T - n_new:], (q, k, v, slopes), dout)

    kc = torch.zeros(B, T, HKV, D, dtype=torch.float64)
    vc = torch.zeros_like(kc)
    kc[:, :T - n_new], vc[:, :T - n_new] = k.detach()[:, :T - n_new], v.detach()[:, :T - n_new]
    qn = q.detach()[:, T - n_new:].clone().requires_grad_()
    kn = k.detach()[:, T - n_new:].clone().requires_grad_()
    vn = v.detach()[:, T - n_new:].clone().requires_grad_()
    out = attn.with_kvcache(qn, kc, vc, T - n_new, kn, vn)
    assert_close(out, full[:, T - n_new:], 1e-10, "packed forward")
    got = torch.autograd.grad(out, (qn, kn, vn, slopes), dout)
    assert_close(got[0], want[0][:, T - n_new:], 1e-10, "dq")
    assert_close(got[1], want[1][:, T - n_new:], 1e-10, "dk of the new tokens")
    assert_close(got[2], want[2][:, T - n_new:], 1e-10, "dv of the new tokens")
    assert_close(got[3], want[3], 1e-10, "d slopes")


def test_gqa_pack_rewrite_maps_rows_to_heads_and_positions():
    """The rewritten graph on packed rows equals the original on the unpacked call, for mods
    that read h and q_idx in both the score and the mask."""
    from attention_engine.api import CompiledAttention, VariantRef
    from attention_engine.gqa_pack import gqa_packed

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + 0.5 * h - 0.25 * q_idx + 0.01 * kv_idx

    def mask_mod(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx + 2 * h
    attn = ae.compile(score_mod, mask_mod)
    B, HQ, HKV, SQ, SKV, D = 2, 6, 2, 3, 10, 4
    G = HQ // HKV
    gen = torch.Generator().manual_seed(12)
    q = torch.randn(B, HQ, SQ, D, dtype=torch.float64, generator=gen)
    k, v = (torch.randn(B, HKV, SKV, D, dtype=torch.float64, generator=gen) for _ in range(2))
    want, want_lse = attn.reference(q, k, v, return_lse=True)  # unpacked
    packed = CompiledAttention(VariantRef(gqa_packed(attn._ref.trace_json, G, SQ)), [], "softmax", None)
    out, lse = packed(q.reshape(B, HKV, G * SQ, D), k, v, return_lse=True)
    assert_close(out.reshape(B, HQ, SQ, D), want, 1e-12, "out")
    assert_close(lse.reshape(B, HQ, SQ), want_lse, 1e-12, "lse")
    with pytest.raises(ValueError, match="group >= 1"):
        gqa_packed(attn._ref.trace_json, 0, 2)


@pytest.mark.parametrize("module", [False, True], ids=["compiled", "module"])
def test_direct_calls_with_few_queries_pack_gqa_groups(module, monkeypatch):
    """A direct call with grouped-query attention and at most 16 queries per head (decode
    through attn(q, k, v)) runs GQA-packed (gqa_pack.packed_call): it must equal the unpacked
    reference, lse and gradients included (q, k, v, a learnable per-head and per-position
    table), and pack only where the group's rows fit a tile."""
    from attention_engine import api, module as module_py
    shapes = []  # the q shapes that reach the op
    for where in (api, module_py):
        real = where.run_op
        monkeypatch.setattr(where, "run_op", lambda op, q, *a, real=real, **kw:
                            shapes.append(tuple(q.shape)) or real(op, q, *a, **kw))
    table = torch.nn.Parameter(torch.randn(6, 5, dtype=torch.float64))

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + table[h, q_idx % 5] - 0.1 * h * (kv_idx - q_idx)
    compiled = ae.compile(score_mod, mods.causal)
    attn = ae.Attention(score_mod, mods.causal) if module else compiled
    gen = torch.Generator().manual_seed(13)
    for sq, packs in ((1, True), (4, True), (16, True), (17, False)):
        q = torch.randn(2, 6, sq, 8, dtype=torch.float64, generator=gen).requires_grad_()
        k, v = (torch.randn(2, 2, 20, 8, dtype=torch.float64, generator=gen).requires_grad_()
                for _ in range(2))
        shapes.clear()
        out, lse = attn(q, k, v, return_lse=True)
        assert shapes == [(2, 2, 3 * sq, 8) if packs else (2, 6, sq, 8)], (sq, shapes)
        want, want_lse = attn.reference(q, k, v, return_lse=True)
        assert_close(out, want, 1e-12, f"out sq={sq}")
        assert_close(lse, want_lse, 1e-12, f"lse sq={sq}")
        dout = torch.randn(out.shape, dtype=torch.float64, generator=gen)
        params = (q, k, v, *(attn.parameters() if module else [table]))
        assert len(params) == 4
        got = torch.autograd.grad((out * dout).sum() + lse.sum(), params)
        ref = torch.autograd.grad((want * dout).sum() + want_lse.sum(), params)
        for i, (a, b) in enumerate(zip(got, ref)):
            assert_close(a, b, 1e-10, f"grad {i} sq={sq}")
    # No GQA, or shapes the op refuses: not packed, the op's own message
    q1 = torch.randn(1, 2, 1, 8, dtype=torch.float64)
    k1 = torch.randn(1, 2, 5, 8, dtype=torch.float64)
    assert attn(q1, k1, k1).shape == (1, 2, 1, 8)
    with pytest.raises((ValueError, RuntimeError), match="8|7|head dim|match"):
        attn(torch.randn(1, 6, 1, 7, dtype=torch.float64), k1, k1)


def test_varlen_packed_route_runs_one_batch_row(monkeypatch):
    """AE_VARLEN=packed runs the sequences back to back as one batch row (the packed-sequences
    rewrite, positions.with_packed_sequences), not padded into a batch; a bad value is an
    error naming the choices."""
    from attention_engine import inference
    calls = []
    real = inference.run_op
    monkeypatch.setattr(inference, "run_op", lambda op, q, *a, **kw: calls.append(q.shape) or real(op, q, *a, **kw))
    attn = ae.compile(mask_mod=mods.causal)
    lens = [3, 5]
    q, k, v = (_packed(lens, 2, 8, s) for s in range(3))
    monkeypatch.setenv("AE_VARLEN", "packed")
    attn.varlen(q, k, v, _cu(lens), _cu(lens))
    monkeypatch.setenv("AE_VARLEN", "padded")
    attn.varlen(q, k, v, _cu(lens), _cu(lens))
    monkeypatch.setenv("AE_VARLEN", "kernel")  # the varlen op: tokens first
    attn.varlen(q, k, v, _cu(lens), _cu(lens))
    monkeypatch.delenv("AE_VARLEN")  # the default: the varlen op
    attn.varlen(q, k, v, _cu(lens), _cu(lens))
    attn.deterministic = True  # (the varlen op's backward is not): the packed route
    attn.varlen(q, k, v, _cu(lens), _cu(lens))
    assert calls == [(1, 2, 8, 8), (2, 2, 5, 8), (8, 2, 8), (8, 2, 8), (1, 2, 8, 8)]
    monkeypatch.setenv("AE_VARLEN", "fast")
    with pytest.raises(ValueError, match="'kernel', 'padded' or 'packed'"):
        attn.varlen(q, k, v, _cu(lens), _cu(lens))


def test_rewritten_variants_tune_as_the_compiled_one(monkeypatch):
    """autotune= is kept per variant key: the packed and positions-rewritten variants a call
    runs must tune as the compiled variant does (a review finding: they ran untuned)."""
    from attention_engine import _C, gqa_pack, inference
    monkeypatch.delenv("AE_AUTOTUNE", raising=False)
    attn = ae.compile(mods.alibi(mods.alibi_slopes(4)), mods.causal, autotune="cached")
    q = torch.randn(1, 4, 1, 8, dtype=torch.float64)
    k = torch.randn(1, 2, 6, 8, dtype=torch.float64)
    attn(q, k, k)
    assert _C.tune_mode(gqa_pack._PACKED[(attn._ref.trace_json, 2, 1)]) == "cached"
    attn.with_kvcache(q.transpose(1, 2), k.transpose(1, 2), k.transpose(1, 2), 6)
    assert _C.tune_mode(inference._POSITIONED[(attn._ref.trace_json, (2, 1), 1)].key) == "cached"
    plain = ae.compile(mask_mod=mods.causal)  # off stays off
    plain(q, k, k)
    assert _C.tune_mode(gqa_pack._PACKED[(plain._ref.trace_json, 2, 1)]) == "off"
