"""Masked positions never contribute, even when V (or K, or Q) holds inf or nan there (issue 15,
defect 6): a position contributes p_ij * v_j only when it is kept, that is mask_mod is true and,
under softmax, its score is above -inf. Kept positions follow plain math (a nan there is a nan
in the row). The reference executor here; the GPU kernels in the gpu-marked test below."""
import pytest
import torch

import attention_engine as ae
from attention_engine import mods
from conftest import assert_close, oracle, rand_qkv

NAN, INF = float("nan"), float("inf")


def poison(t, index, value):
    with torch.no_grad():
        t[index] = value
    return t


def clean_copy(t, index):
    """t with the poisoned positions set to 0: what a masked position must act like."""
    c = t.detach().clone()
    c[index] = 0.0
    return c.requires_grad_(True)


def grads(out, inputs, seed=1):
    dout = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad(out, inputs, dout, materialize_grads=True)


def compare(attn, mod, mask, q, k, v, index_of, which="v", normalize="softmax"):
    """attn on (q, k, v) with `which` poisoned at index_of against the oracle on clean inputs."""
    ins = {"q": q, "k": k, "v": v}
    clean = dict(ins)
    clean[which] = clean_copy(ins[which], index_of)
    out = attn(q, k, v)
    ref, _ = oracle(clean["q"], clean["k"], clean["v"], mod, mask, normalize=normalize)
    assert_close(out, ref, 1e-10, "out")
    got = grads(out, (q, k, v))
    want = grads(ref, (clean["q"], clean["k"], clean["v"]))
    for name, a, b in zip("qkv", got, want):
        if name == which:  # the poisoned positions' own gradient: only where nothing is kept
            a, b = clean_copy(a, index_of), clean_copy(b, index_of)
        assert_close(a, b, 1e-10, f"d{name}")


@pytest.mark.parametrize("value", [NAN, INF, -INF])
def test_nonfinite_v_at_keys_masked_for_every_row(value):
    mask = lambda b, h, qi, ki: ki < 40  # noqa: E731
    attn = ae.compile(mask_mod=mask)
    q, k, v = rand_qkv()
    poison(v, (slice(None), slice(None), slice(40, None)), value)
    compare(attn, None, mask, q, k, v, (slice(None), slice(None), slice(40, None)))


def test_nonfinite_v_under_a_causal_mask():
    # the last key holds inf: rows before it do not see it and must stay finite
    attn = ae.compile(mask_mod=mods.causal)
    q, k, v = rand_qkv(SQ=47, SKV=47)
    index = (slice(None), slice(None), 46, 3)
    poison(v, index, INF)
    out = attn(q, k, v)
    assert torch.isfinite(out[:, :, :46]).all()
    assert torch.isinf(out[:, :, 46, 3]).all()  # the row that keeps it: plain math
    ref, _ = oracle(q, k, clean_copy(v, index), None, mods.causal)
    assert_close(out[:, :, :46], ref[:, :, :46], 1e-10, "rows that do not see the key")


def test_every_row_masked_and_inf_in_v_gives_zero_gradients():
    attn = ae.compile(mask_mod=lambda b, h, qi, ki: qi < 0)
    q, k, v = rand_qkv(SQ=8, SKV=8)
    poison(v, (0, 0, 3, 0), INF)
    out = attn(q, k, v)
    assert torch.equal(out, torch.zeros_like(out))
    dq, dk, dv = grads(out, (q, k, v))
    for name, g in (("dq", dq), ("dk", dk), ("dv", dv)):
        assert torch.equal(g, torch.zeros_like(g)), name


def test_minus_inf_score_acts_as_a_mask_for_nonfinite_v():
    mod = lambda s, b, h, qi, ki: torch.where(ki >= 40, -INF, s)  # noqa: E731
    attn = ae.compile(mod)
    q, k, v = rand_qkv()
    index = (slice(None), slice(None), slice(40, None))
    poison(v, index, NAN)
    compare(attn, mod, None, q, k, v, index)


def test_nonfinite_k_and_q_at_masked_positions():
    mask = lambda b, h, qi, ki: (ki < 40) & (qi >= 3)  # noqa: E731
    attn = ae.compile(mask_mod=mask)
    q, k, v = rand_qkv()
    poison(k, (slice(None), slice(None), slice(40, None)), NAN)
    poison(q, (slice(None), slice(None), slice(0, 3)), INF)
    out = attn(q, k, v)
    assert torch.isfinite(out).all()
    dq, dk, dv = grads(out, (q, k, v))
    assert torch.isfinite(dq).all() and torch.isfinite(dv).all()
    assert torch.isfinite(dk[:, :, :40]).all()


def test_normalize_none_masked_nonfinite_v():
    mask = lambda b, h, qi, ki: ki < 40  # noqa: E731
    mod = lambda s, b, h, qi, ki: torch.sigmoid(s)  # noqa: E731
    attn = ae.compile(mod, mask, normalize="none")
    q, k, v = rand_qkv()
    index = (slice(None), slice(None), slice(40, None))
    poison(v, index, INF)
    compare(attn, mod, mask, q, k, v, index, normalize="none")


def test_nan_at_a_kept_position_still_poisons_its_row():
    attn = ae.compile(mask_mod=mods.causal)
    q, k, v = rand_qkv(SQ=16, SKV=16)
    poison(v, (0, 0, 5, 0), NAN)
    out = attn(q, k, v)
    assert torch.isnan(out[0, 0, 5:, 0]).all()
    assert torch.isfinite(out[0, 0, :5]).all()


def test_kernels_of_a_score_mod_that_writes_an_infinity_scan_every_tile():
    # such a score_mod masks keys inside blocks the walk calls full: every tile's V is checked
    def source(attn):
        return attn.variant.kernel_source("fwd", 64, 64, True, [], family="sm80")["source"]
    assert "kScoreMasks = true" in source(ae.compile(
        lambda s, b, h, qi, ki: torch.where(ki > qi, -INF, s)))
    assert "kScoreMasks = false" in source(ae.compile(mods.softcap(20.0), mods.causal))


def test_exact_pv_switch_compiles_the_checks_out(monkeypatch):
    # AE_EXACT_PV=0 (an A/B switch): a kernel of its own (its key), without the checks
    attn = ae.compile(mask_mod=mods.causal)
    monkeypatch.delenv("AE_EXACT_PV", raising=False)
    on = attn.variant.kernel_source("fwd", 128, 128, True, [], family="sm90")
    assert "AE_CHECK_V" not in on["source"]
    monkeypatch.setenv("AE_EXACT_PV", "0")
    off = attn.variant.kernel_source("fwd", 128, 128, True, [], family="sm90")
    assert off["describe"].endswith(" trustv") and "#define AE_CHECK_V 0" in off["source"]
    assert " trustv" not in attn.variant.kernel_source("bwd", 128, 128, True, [])["describe"]


# ---------------------------------------------------------------------------------------------
# The fused kernels: V at masked keys is never read into P V (tiles with masked keys scan V and
# add P V score by score when it holds inf or nan: templates/nvidia/exact_pv.h), and a masked
# score's dS stays 0 whatever dP = dO.V is. Marked gpu (skipped without CUDA).
# ---------------------------------------------------------------------------------------------

@pytest.fixture(params=["sm90", "sm80"])
def family(request, monkeypatch):
    if request.param == "sm80":
        monkeypatch.setenv("AE_DISABLE_SM90", "1")
    elif torch.cuda.is_available() and torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("the sm90 templates need a Hopper GPU")
    return request.param


@pytest.fixture(params=["rule", "pass"])
def v_check(request, monkeypatch):
    """Without the V-check pass (these shapes have too few rows for the planner's rule) and
    with it forced (AE_V_CHECK=1: common/v_check.h must find the inf or nan, or the kernels skip
    their scans and the masked values reach the output)."""
    if request.param == "pass":
        monkeypatch.setenv("AE_V_CHECK", "1")
    else:
        monkeypatch.delenv("AE_V_CHECK", raising=False)
    return request.param


def _gpu_qkv(B, H, SQ, SKV, D, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, n, D, generator=gen).to("cuda", dtype) for n in (SQ, SKV, SKV)]


def _kernel_vs_reference(attn, q, k, v, family, poisoned, backward=True):
    """attn's kernels on (q, k, v) (v poisoned at masked keys) against the float64 reference
    on the same inputs; gradients too. Returns the kernel's output."""
    assert attn.backend_for(q, k, v) == family
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    qd, kd, vd = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    out = attn(q, k, v)
    ref = attn.reference(qd, kd, vd)
    assert torch.isfinite(ref[~poisoned]).all()  # (the oracle's promise: the premise here)
    finite = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(out), finite), "a masked inf or nan reached the output"
    assert (out.double() - ref)[finite].abs().max().item() < 0.03
    if backward:
        assert attn.backend_for(q, k, v, backward=True) in ("sm80", "sm90")
        dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out)
        dout = torch.where(finite, dout, torch.zeros_like(dout))
        got = torch.autograd.grad(out, (q, k, v), dout)
        want = torch.autograd.grad(ref, (qd, kd, vd), dout.double())
        for name, a, b in zip(("dq", "dk", "dv"), got, want):
            assert torch.isfinite(b).all(), name
            assert torch.isfinite(a).all(), f"{name}: a masked inf or nan reached it"
            err = (a.double() - b).abs().max().item()
            assert err < 0.03 * max(1.0, b.abs().max().item()), (name, err)
    return out


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,D", [(torch.bfloat16, 128), (torch.float16, 128),
                                     (torch.bfloat16, 256)])  # (D 256: sm90 without overlap)
def test_kernels_ignore_nonfinite_v_at_masked_keys(dtype, D, family, v_check):
    # keys 200..255 masked for every row (a partly masked key block), rows 0..7 keep nothing
    mask = lambda b, h, qi, ki: (ki < 200) & (qi >= 8)  # noqa: E731
    attn = ae.compile(mask_mod=mask)
    q, k, v = _gpu_qkv(2, 4, 256, 256, D, dtype)
    v[:, :, 200:] = INF
    v[:, :, 220:, :7] = NAN
    v[:, :, 240:, 64:] = -INF
    out = _kernel_vs_reference(attn, q, k, v, family, torch.zeros(2, 4, 256, D, dtype=torch.bool),
                               backward=D == 128)
    assert torch.equal(out[:, :, :8], torch.zeros_like(out[:, :, :8]))


@pytest.mark.gpu
def test_kernels_causal_inf_in_v_reaches_only_rows_that_keep_it(family, v_check):
    # 300 keys: the diagonal tiles and the key tail are the partial ones; key 250 holds inf in
    # column 3, key 299 nan everywhere (only the last row keeps it)
    attn = ae.compile(mask_mod=mods.causal)
    q, k, v = _gpu_qkv(1, 2, 300, 300, 64, torch.bfloat16)
    v[:, :, 250, 3] = INF
    v[:, :, 299] = NAN
    poisoned = torch.zeros(1, 2, 300, 64, dtype=torch.bool)
    poisoned[:, :, 250:, 3] = True
    poisoned[:, :, 299] = True
    out = _kernel_vs_reference(attn, q, k, v, family, poisoned, backward=False)
    assert torch.isfinite(out[:, :, :250]).all()
    assert torch.isinf(out[:, :, 250:299, 3]).all() and torch.isnan(out[:, :, 299]).all()


@pytest.mark.gpu
def test_kernels_minus_inf_score_acts_as_a_mask(family, v_check):
    # a score_mod's -inf masks keys inside tiles the block walk calls full
    attn = ae.compile(lambda s, b, h, qi, ki: torch.where((ki % 64) >= 60, -INF, s))
    q, k, v = _gpu_qkv(1, 2, 128, 256, 64, torch.bfloat16)
    v[:, :, 60::64] = NAN
    _kernel_vs_reference(attn, q, k, v, family, torch.zeros(1, 2, 128, 64, dtype=torch.bool))


@pytest.mark.gpu
def test_kernels_rows_that_keep_nothing_and_inf_in_v_give_zero_gradients(family):
    # rows 0..7 keep nothing; the others keep keys 0..39 of the same (partly masked) key
    # block, whose masked key 50 holds inf: dS = P (dP - delta) with P = 0 and dP = inf
    attn = ae.compile(mask_mod=lambda b, h, qi, ki: (qi >= 8) & (ki < 40))
    assert attn.backend_for(*_gpu_qkv(1, 2, 64, 64, 64, torch.bfloat16)) == family
    q, k, v = _gpu_qkv(1, 2, 64, 64, 64, torch.bfloat16)
    v[:, :, 50] = INF
    q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    out = attn(q, k, v)
    assert torch.equal(out[:, :, :8], torch.zeros_like(out[:, :, :8]))
    assert torch.isfinite(out).all()
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    assert torch.equal(dq[:, :, :8], torch.zeros_like(dq[:, :, :8]))
    for name, g in (("dq", dq), ("dk", dk), ("dv", dv)):
        assert torch.isfinite(g).all(), name
    assert torch.equal(dk[:, :, 40:], torch.zeros_like(dk[:, :, 40:]))
    assert torch.equal(dv[:, :, 40:], torch.zeros_like(dv[:, :, 40:]))


def _decode_qkv(sq, seed):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 8, sq, 128, generator=gen).to("cuda", torch.bfloat16)
    k, v = (torch.randn(2, 2, 1000, 128, generator=gen).to("cuda", torch.bfloat16)
            for _ in range(2))
    v[:, :, 900:] = NAN
    v[:, :, 950:, :5] = INF
    return q, k, v


@pytest.mark.gpu
@pytest.mark.parametrize("splits", ["1", "4"])
def test_kernels_decode_template_ignores_nonfinite_v(splits, monkeypatch):
    # 1 and 4 query rows, GQA 8:2, through the decode template (an sm80-family kernel), whole
    # and split into key ranges
    monkeypatch.setenv("AE_DECODE", "1")
    monkeypatch.setenv("AE_KV_SPLITS", splits)
    attn = ae.compile(mask_mod=lambda b, h, qi, ki: ki < 900)
    for sq in (1, 4):
        q, k, v = _decode_qkv(sq, sq)
        _kernel_vs_reference(attn, q, k, v, "sm80", torch.zeros(2, 8, sq, 128, dtype=torch.bool),
                             backward=False)


@pytest.mark.gpu
def test_kernels_split_kv_forward_ignores_nonfinite_v(family, monkeypatch):
    # the prefill templates built for a split-KV launch (partial outputs, then the combine)
    monkeypatch.setenv("AE_KV_SPLITS", "4")
    attn = ae.compile(mask_mod=lambda b, h, qi, ki: ki < 900)
    q, k, v = _decode_qkv(64, 3)
    _kernel_vs_reference(attn, q, k, v, family, torch.zeros(2, 8, 64, 128, dtype=torch.bool),
                         backward=False)


@pytest.mark.gpu
def test_kvcache_garbage_past_the_lengths_does_not_reach_the_output():
    # a cache allocated with torch.empty: positions past each sequence's length hold anything
    attn = ae.compile(mask_mod=mods.causal)
    B, S_max, H, D = 3, 512, 4, 128
    gen = torch.Generator().manual_seed(0)
    k_cache = torch.full((B, S_max, H, D), NAN).to("cuda", torch.bfloat16)
    v_cache = torch.full((B, S_max, H, D), INF).to("cuda", torch.bfloat16)
    lens = torch.tensor([100, 300, 511], dtype=torch.int32, device="cuda")
    for b in range(B):
        n = int(lens[b])
        k_cache[b, :n] = torch.randn(n, H, D, generator=gen).to("cuda", torch.bfloat16)
        v_cache[b, :n] = torch.randn(n, H, D, generator=gen).to("cuda", torch.bfloat16)
    q = torch.randn(B, 1, H, D, generator=gen).to("cuda", torch.bfloat16)
    out = attn.with_kvcache(q, k_cache, v_cache, lens)
    assert torch.isfinite(out).all(), "cache positions past a sequence's length reached it"
    plain = ae.compile()  # the query is its sequence's last position: causal keeps every key
    for b in range(B):
        n = int(lens[b])
        want = plain.reference(*(t[b:b + 1, :m].transpose(1, 2).double()
                                 for t, m in ((q, 1), (k_cache, n), (v_cache, n))))
        got = out[b:b + 1].transpose(1, 2).double()
        assert (got - want).abs().max().item() < 0.03


@pytest.mark.gpu
def test_kernels_planned_v_check_finds_nonfinite_v(family):
    # 2048 query rows x 4 heads per key head, the rule's 8192: the planner runs the V-check
    # pass itself (the rule's own test is the CPU one below); a nan at key 2000 must still
    # reach only the rows that keep it
    attn = ae.compile(mask_mod=mods.causal)
    q, k, v = _gpu_qkv(1, 1, 2048, 2048, 64, torch.bfloat16)
    q = torch.cat([q, q.flip(2), -q, 2 * q], dim=1)  # GQA 4:1
    v[:, :, 2000] = NAN
    poisoned = torch.zeros(1, 4, 2048, 64, dtype=torch.bool)
    poisoned[:, :, 2000:] = True
    out = _kernel_vs_reference(attn, q, k, v, family, poisoned, backward=False)
    assert torch.isfinite(out[:, :, :2000]).all() and torch.isnan(out[:, :, 2000:]).all()


def test_planner_runs_the_v_check_pass_where_forwards_would_scan_v():
    # (CPU: the plans only) masked forwards with 8192 query rows per key head or more get the
    # pass; fewer rows, no mask, or a backward do not
    causal, plain = ae.compile(mask_mod=mods.causal), ae.compile()
    plan = causal.variant.kernel_source("fwd", 128, 128, q_len=8192)["plan"]
    assert plan.index("v_check") < plan.index("fwd90") and "workspace v_flag [1]" in plan
    assert "v_check" not in causal.variant.kernel_source("fwd", 128, 128, q_len=4096)["plan"]
    assert "v_check" not in plain.variant.kernel_source("fwd", 128, 128, q_len=8192)["plan"]
    assert "v_check" not in causal.variant.kernel_source("bwd", 128, 128, q_len=8192)["plan"]
    inf_mod = ae.compile(lambda s, b, h, qi, ki: torch.where(ki > qi, -INF, s))
    assert "v_check" in inf_mod.variant.kernel_source("fwd", 128, 128, q_len=8192)["plan"]


@pytest.mark.gpu
def test_kernels_v_check_pass_scans_every_batch_and_key_head(family, monkeypatch):
    # the pass forced; GQA 2:1, 2 batches, V a transposed view, 1001 keys (not a whole number
    # of the pass's rows per CTA): a nan in the last batch's last key head only
    monkeypatch.setenv("AE_V_CHECK", "1")
    attn = ae.compile(mask_mod=mods.causal)
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 4, 1001, 64, generator=gen).to("cuda", torch.bfloat16)
    k = torch.randn(2, 2, 1001, 64, generator=gen).to("cuda", torch.bfloat16)
    v = torch.randn(2, 1001, 2, 64, generator=gen).to("cuda", torch.bfloat16).transpose(1, 2)
    v[1, 1, 900] = NAN  # kept by rows 900.. of query heads 2 and 3 of batch 1 only
    poisoned = torch.zeros(2, 4, 1001, 64, dtype=torch.bool)
    poisoned[1, 2:, 900:] = True
    out = _kernel_vs_reference(attn, q, k, v, family, poisoned, backward=False)
    assert torch.isfinite(out[1, 2:, :900]).all() and torch.isnan(out[1, 2:, 900:]).all()
    assert torch.isfinite(out[0]).all() and torch.isfinite(out[1, :2]).all()
