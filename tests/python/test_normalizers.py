"""Custom row normalizations (ae.Normalizer, ae.normalizers): forward, returned statistic and
gradients against a dense float64 implementation written here with plain torch autograd."""
import math

import pytest
import torch

import attention_engine as ae
from attention_engine import mods
from attention_engine.errors import GraphError, TraceError

F64 = torch.float64


# ----------------------------------------------------------------------------------------------
# Independent dense reference
# ----------------------------------------------------------------------------------------------

def dense_reference(q, k, v, weight, stat=None, finish=None, log_domain=False,
                    detach_stats=False, score_mod=None, mask_mod=None, scale=None):
    """out [B,Hq,Sq,Dv] and the row statistic [B,Hq,Sq] (L, or lse in the log domain), over the
    dense [B,H,Sq,Skv] matrix, the functions applied to broadcast index tensors."""
    B, HQ, SQ, D = q.shape
    HKV, SKV = k.shape[1], k.shape[2]
    k, v = k.repeat_interleave(HQ // HKV, 1), v.repeat_interleave(HQ // HKV, 1)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    full = (B, HQ, SQ, SKV)
    b4, h4 = torch.arange(B).view(B, 1, 1, 1), torch.arange(HQ).view(1, HQ, 1, 1)
    q4, k4 = torch.arange(SQ).view(1, 1, SQ, 1), torch.arange(SKV).view(1, 1, 1, SKV)
    b3, h3, q3 = b4[..., 0], h4[..., 0], q4[..., 0]
    default = torch.get_default_dtype()
    torch.set_default_dtype(F64)  # int -> float promotion inside the functions: float64
    try:
        x = (q @ k.transpose(-1, -2)) * scale
        if score_mod is not None:
            x = torch.broadcast_to(score_mod(x, b4, h4, q4, k4), full)
        keep = torch.ones(full, dtype=torch.bool)
        if mask_mod is not None:
            keep = torch.broadcast_to(torch.as_tensor(mask_mod(b4, h4, q4, k4)), full)
        row_ok = keep.any(-1)
        zero = torch.zeros((), dtype=F64)
        if not log_domain:
            f = torch.broadcast_to(weight(x, b4, h4, q4, k4), full)
            g = f if stat is None else torch.broadcast_to(stat(x, b4, h4, q4, k4), full)
            f, g = torch.where(keep, f, zero), torch.where(keep, g, zero)
            L = g.sum(-1)
            Lc = L.detach() if detach_stats else L
            c = torch.ones_like(L) if finish is None else \
                torch.broadcast_to(finish(Lc, b3, h3, q3), L.shape)
            return c[..., None] * (f @ v), L
        u = torch.broadcast_to(weight(x, b4, h4, q4, k4), full)
        u = torch.where(keep, u, torch.full((), -math.inf, dtype=F64))
        u = torch.where(row_ok[..., None], u, zero)  # finite stand-in for empty rows
        lse = torch.logsumexp(u, -1)
        lc = lse.detach() if detach_stats else lse
        log_c = -lc if finish is None else torch.broadcast_to(finish(lc, b3, h3, q3), lse.shape)
        out = torch.exp(log_c + lc)[..., None] * (torch.exp(u - lc[..., None]) @ v)
        out = torch.where(row_ok[..., None], out, zero)
        return out, torch.where(row_ok, lse, torch.full((), -math.inf, dtype=F64))
    finally:
        torch.set_default_dtype(default)


# ----------------------------------------------------------------------------------------------
# Normalizers under test: (engine normalizer, reference definition, captured tensors with grad)
# ----------------------------------------------------------------------------------------------

def _per_head(hq, seed, lo=None):
    gen = torch.Generator().manual_seed(seed)
    t = torch.rand(hq, dtype=F64, generator=gen) + lo if lo is not None else \
        torch.randn(hq, dtype=F64, generator=gen)
    return t.requires_grad_(True)


def _stable_logaddexp(a, b):
    m = torch.maximum(a, b)
    return m + torch.log(torch.exp(a - m) + torch.exp(b - m))


def make_normalizer(name, hq):
    """-> (normalizer, reference kwargs, captured tensors requiring grad)."""
    N = ae.normalizers
    if name == "softmax":
        return N.softmax, dict(weight=lambda x, b, h, q, k: x, log_domain=True), []
    if name == "none":
        return N.none, dict(weight=lambda x, b, h, q, k: x), []
    if name == "retention":
        return N.retention, dict(weight=lambda x, b, h, q, k: x,
                                 stat=lambda x, b, h, q, k: torch.abs(x),
                                 finish=lambda L, b, h, q: 1.0 / torch.clamp(L, min=1.0)), []
    if name == "relu_normalized":
        return N.relu_normalized, dict(weight=lambda x, b, h, q, k: torch.relu(x),
                                       finish=lambda L, b, h, q: 1.0 / torch.clamp(L, min=1e-6)), []
    if name == "softmax_with_temperature":
        t = _per_head(hq, 11, lo=0.5)
        return N.softmax_with_temperature(t), dict(weight=lambda x, b, h, q, k: x / t[h],
                                                   log_domain=True), [t]
    if name == "softmax_with_sink":
        sink = _per_head(hq, 12)
        return N.softmax_with_sink(sink), dict(
            weight=lambda x, b, h, q, k: x, log_domain=True,
            finish=lambda lse, b, h, q: -torch.logaddexp(lse, sink[h])), [sink]
    if name == "custom_sqrelu":  # squared ReLU normalized by the row sum of |x|
        spec = dict(weight=lambda x, b, h, q, k: torch.relu(x) ** 2,
                    stat=lambda x, b, h, q, k: torch.abs(x),
                    finish=lambda L, b, h, q: 1 / (1 + L))
        return ae.Normalizer(spec["weight"], spec["stat"], spec["finish"]), spec, []
    if name == "custom_linear_captured":  # captured tensors in weight, stat and finish
        bias, sw, gain = _per_head(hq, 13), _per_head(hq, 14, lo=0.5), _per_head(hq, 15, lo=0.5)
        spec = dict(weight=lambda x, b, h, q, k: torch.sigmoid(x + bias[h]),
                    stat=lambda x, b, h, q, k: torch.abs(x) * sw[h],
                    finish=lambda L, b, h, q: gain[h] / (1.0 + L))
        return ae.Normalizer(spec["weight"], spec["stat"], spec["finish"]), spec, [bias, sw, gain]
    if name == "custom_log_temp_sink":  # learnable per-head temperature and sink
        temp, sink = _per_head(hq, 16, lo=0.5), _per_head(hq, 17)
        spec = dict(weight=lambda x, b, h, q, k: x / temp[h],
                    finish=lambda lse, b, h, q: -_stable_logaddexp(lse, sink[h]),
                    log_domain=True)
        return (ae.Normalizer(spec["weight"], finish=spec["finish"], log_domain=True,
                              name="temp_sink"), spec, [temp, sink])
    raise AssertionError(name)


NORMALIZERS = ["softmax", "none", "retention", "relu_normalized", "softmax_with_temperature",
               "softmax_with_sink", "custom_sqrelu", "custom_linear_captured",
               "custom_log_temp_sink"]


def make_scenario(name):
    """-> (shape kwargs, score_mod, mask_mod, captured tensors requiring grad)."""
    shape = dict(B=2, HQ=2, HKV=2, SQ=8, SKV=8, D=4, DV=6)
    if name == "nomask":
        return shape, None, None, []
    if name == "causal":
        return shape, None, mods.causal, []
    if name == "empty_rows":  # row 0 sees nothing
        return shape, None, lambda b, h, q, k: k < q, []
    if name == "gqa":
        return dict(shape, HQ=4, HKV=2), None, None, []
    if name == "alibi":
        slope = _per_head(4, 21, lo=0.1)
        return (dict(shape, HQ=4, HKV=2), lambda x, b, h, q, k: x + slope[h] * (k - q),
                mods.causal, [slope])
    if name == "sq_lt_skv":
        return dict(shape, SQ=5, SKV=11), None, None, []
    if name == "sq_gt_skv_empty":  # row 0 empty, rows >= 5 see every key
        return dict(shape, SQ=11, SKV=5), None, lambda b, h, q, k: k < q, []
    raise AssertionError(name)


SCENARIOS = ["nomask", "causal", "empty_rows", "gqa", "alibi", "sq_lt_skv", "sq_gt_skv_empty"]


def rand_qkv(B, HQ, HKV, SQ, SKV, D, DV, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, HQ, SQ, D, dtype=F64, generator=gen)
    k = torch.randn(B, HKV, SKV, D, dtype=F64, generator=gen)
    v = torch.randn(B, HKV, SKV, DV, dtype=F64, generator=gen)
    return q, k, v


def close(a, b, what, tol=1e-9):
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} vs {b.dtype}"
    assert not torch.isnan(a).any(), f"{what}: nan in result"
    if a.numel() == 0:
        return
    err = (a - b).abs().max().item()
    bound = tol * (1.0 + b.abs().max().item())
    assert err <= bound, f"{what}: max abs error {err:.3e} > {bound:.1e}"


def close_stat(a, b, what, tol=1e-9):
    assert a.shape == b.shape and a.dtype == b.dtype, f"{what}: {a.shape} {a.dtype} vs {b.shape} {b.dtype}"
    assert not torch.isnan(a).any(), f"{what}: nan"
    assert torch.equal(torch.isneginf(a), torch.isneginf(b)), f"{what}: -inf rows differ"
    fin = torch.isfinite(b)
    close(a[fin], b[fin], what, tol)


def finite_or_zero(t):
    return torch.where(torch.isfinite(t), t, torch.zeros((), dtype=t.dtype))


def compare(attn, ref_kwargs, q, k, v, extra, score_mod=None, mask_mod=None, use_stat=True,
            detach_stats=False, tol=1e-9):
    """Forward (out, stat) and the gradients of q, k, v and `extra` against dense_reference."""
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out, st = attn(q, k, v, return_lse=True)
    ref, ref_st = dense_reference(q, k, v, score_mod=score_mod, mask_mod=mask_mod,
                                  detach_stats=detach_stats, **ref_kwargs)
    close(out, ref, "out", tol)
    close_stat(st, ref_st, "stat", tol)
    gen = torch.Generator().manual_seed(5)
    dout = torch.randn(out.shape, dtype=F64, generator=gen)
    dst = torch.randn(st.shape, dtype=F64, generator=gen)
    inputs = (q, k, v) + tuple(extra)
    names = ["dq", "dk", "dv"] + [f"d captured[{i}]" for i in range(len(extra))]

    def loss(o, s):
        total = (o * dout).sum()
        return total + (finite_or_zero(s) * dst).sum() if use_stat else total

    got = torch.autograd.grad(loss(out, st), inputs, materialize_grads=True, allow_unused=True)
    want = torch.autograd.grad(loss(ref, ref_st), inputs, materialize_grads=True,
                               allow_unused=True)
    for n, a, b in zip(names, got, want):
        assert torch.isfinite(a).all(), f"{n}: non-finite gradient"
        close(a, b, n, tol)
    return out, st, got


# ----------------------------------------------------------------------------------------------
# 1. every normalizer x every scenario
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("norm_name", NORMALIZERS)
def test_against_dense_reference(norm_name, scenario):
    shape, score_mod, mask_mod, scen_extra = make_scenario(scenario)
    norm, ref_kwargs, norm_extra = make_normalizer(norm_name, shape["HQ"])
    attn = ae.compile(score_mod=score_mod, mask_mod=mask_mod, normalize=norm)
    q, k, v = rand_qkv(**shape)
    out, st, grads = compare(attn, ref_kwargs, q, k, v, scen_extra + norm_extra,
                             score_mod=score_mod, mask_mod=mask_mod)
    assert st.shape == out.shape[:3] and st.dtype == F64
    if scenario in ("empty_rows", "sq_gt_skv_empty"):
        assert torch.all(out[:, :, 0] == 0), "empty row: out must be 0"
        if ref_kwargs.get("log_domain"):
            assert torch.all(torch.isneginf(st[:, :, 0])), "empty row: lse must be -inf"
        else:
            assert torch.all(st[:, :, 0] == 0), "empty row: L must be 0"
        assert torch.all(grads[0][:, :, 0] == 0), "empty row: dq must be 0"
    for g in grads[3:]:  # the captured tensors do get a gradient
        assert g.abs().max() > 0


# ----------------------------------------------------------------------------------------------
# 2. detach_stats: AttentionEngine's retention reference
# ----------------------------------------------------------------------------------------------

def retention_reference_detached(q, k, v, log_gamma):
    """AttentionEngine's retention: decayed causal scores, normalized by the detached
    row sum of |score| clamped at 1."""
    S = q.shape[2]
    i, j = torch.arange(S).view(S, 1), torch.arange(S).view(1, S)
    decay = torch.exp(log_gamma.view(-1, 1, 1) * (i - j)) * (j <= i)
    qk = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    qkm = qk * decay
    r = qkm.detach().abs().sum(-1, keepdim=True).clamp(min=1.0)
    return (qkm / r) @ v, r[..., 0]


def test_detach_stats_retention_matches_attention_engine_reference():
    H = 2
    log_gamma = torch.log(1 - 2.0 ** (-1.0 - torch.arange(H, dtype=F64))).requires_grad_(True)
    score_mod = lambda x, b, h, q, k: x * torch.exp(log_gamma[h] * (q - k))  # noqa: E731
    norm = ae.Normalizer(lambda x, b, h, q, k: x, lambda x, b, h, q, k: torch.abs(x),
                         lambda L, b, h, q: 1.0 / torch.clamp(L, min=1.0), detach_stats=True)
    attn = ae.compile(score_mod, mods.causal, normalize=norm)
    q, k, v = rand_qkv(1, H, H, 8, 8, 4, 5, seed=3)
    q = q * 2.0  # most rows above the clamp, so detaching matters
    q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    out, st = attn(q, k, v, return_lse=True)
    ref, r = retention_reference_detached(q, k, v, log_gamma)
    close(out, ref, "out")
    # the returned stat is L (the unclamped row sum of |score|)
    L_ref = ((q @ k.transpose(-1, -2)) / 2.0 * torch.exp(
        log_gamma.view(-1, 1, 1) * (torch.arange(8).view(8, 1) - torch.arange(8)))
             * (torch.arange(8) <= torch.arange(8).view(8, 1))).abs().sum(-1)
    close(st, L_ref.detach(), "stat")
    assert (st > 1).sum() >= 4, "test premise: rows above the clamp"
    assert not st.requires_grad or all(
        g is None or torch.all(g == 0)
        for g in torch.autograd.grad(st.sum(), (q, k, v, log_gamma), allow_unused=True,
                                      retain_graph=True)), \
        "detached stat must carry no gradient"
    dout = torch.randn(out.shape, dtype=F64, generator=torch.Generator().manual_seed(9))
    inputs = (q, k, v, log_gamma)
    got = torch.autograd.grad(out, inputs, dout)
    want = torch.autograd.grad(ref, inputs, dout)
    for n, a, b in zip(["dq", "dk", "dv", "dlog_gamma"], got, want):
        close(a, b, n)
    # and it differs from retention without detaching
    attn_full = ae.compile(score_mod, mods.causal, normalize=ae.normalizers.retention)
    out_full = attn_full(q, k, v)
    close(out_full, out, "forward is the same with or without detach")
    got_full = torch.autograd.grad(out_full, (q, k), dout)
    assert (got_full[0] - got[0]).abs().max() > 1e-3, "detach_stats changed nothing in dq"


def test_detach_stats_keeps_finish_captured_gradient():
    """A captured tensor in finish gets its gradient through finish's own dependence on it,
    with L itself constant; through weight too."""
    H = 2
    gain, wb = _per_head(H, 31, lo=0.5), _per_head(H, 32)
    spec = dict(weight=lambda x, b, h, q, k: torch.relu(x + wb[h]),
                stat=lambda x, b, h, q, k: torch.abs(x),
                finish=lambda L, b, h, q: gain[h] / torch.clamp(L, min=1.0))
    norm = ae.Normalizer(spec["weight"], spec["stat"], spec["finish"], detach_stats=True)
    attn = ae.compile(mask_mod=mods.causal, normalize=norm)
    q, k, v = rand_qkv(2, H, H, 7, 7, 4, 3, seed=4)
    q = q * 2.0
    compare(attn, spec, q, k, v, [wb, gain], mask_mod=mods.causal, use_stat=False,
            detach_stats=True)


# ----------------------------------------------------------------------------------------------
# 3. retention around its clamp
# ----------------------------------------------------------------------------------------------

def test_retention_rows_below_and_above_the_clamp():
    attn = ae.compile(normalize=ae.normalizers.retention)
    q, k, v = rand_qkv(2, 2, 2, 10, 10, 4, 4, seed=6)
    q = q.clone()
    q[:, :, :5] *= 0.01  # L < 1: c = 1, no gradient through max(L, 1)
    q[:, :, 5:] *= 3.0   # L > 1
    ref_kwargs = make_normalizer("retention", 2)[1]
    out, st, _ = compare(attn, ref_kwargs, q, k, v, [])
    assert torch.all(st[:, :, :5] < 1) and torch.all(st[:, :, 5:] > 1), "test premise"
    # below the clamp the output is the plain sum of x v
    x = (q @ k.transpose(-1, -2)) / 2.0
    close(out[:, :, :5], (x @ v)[:, :, :5], "out below the clamp (c = 1)")
    close(out[:, :, 5:], ((x / x.abs().sum(-1, keepdim=True)) @ v)[:, :, 5:],
          "out above the clamp (c = 1 / L)")


# ----------------------------------------------------------------------------------------------
# 4. gradcheck
# ----------------------------------------------------------------------------------------------

def _gradcheck(norm, extra, mask_mod=mods.causal):
    q, k, v = (t.requires_grad_(True) for t in rand_qkv(1, 2, 2, 5, 5, 4, 4, seed=7))
    attn = ae.compile(mask_mod=mask_mod, normalize=norm)
    # the captured tensors are the same objects gradcheck perturbs in place
    fn = lambda q, k, v, *caps: attn(q, k, v, return_lse=True)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v) + tuple(extra))


def test_gradcheck_linear_with_captured_tensor():
    w = _per_head(2, 41, lo=0.5)
    norm = ae.Normalizer(lambda x, b, h, q, k: x * w[h], lambda x, b, h, q, k: x * x,
                         lambda L, b, h, q: 1.0 / (1.0 + L * w[h]))
    _gradcheck(norm, [w])


def test_gradcheck_log_domain_with_captured_tensors():
    temp, sink = _per_head(2, 42, lo=0.5), _per_head(2, 43)
    norm = ae.Normalizer(lambda x, b, h, q, k: x / temp[h],
                         finish=lambda lse, b, h, q: -_stable_logaddexp(lse, sink[h]),
                         log_domain=True)
    _gradcheck(norm, [temp, sink])


# ----------------------------------------------------------------------------------------------
# 5. the ready softmax / none equal the built-in strings
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mask", ["none", "causal", "empty_rows"])
def test_normalizers_softmax_equals_builtin_softmax(mask):
    mask_mod = {"none": None, "causal": mods.causal, "empty_rows": lambda b, h, q, k: k < q}[mask]
    score_mod = mods.softcap(3.0)
    a = ae.compile(score_mod, mask_mod, normalize=ae.normalizers.softmax)
    b = ae.compile(score_mod, mask_mod, normalize="softmax")
    q, k, v = (t.requires_grad_(True) for t in rand_qkv(2, 4, 2, 8, 9, 4, 5, seed=8))
    out_a, lse_a = a(q, k, v, return_lse=True)
    out_b, lse_b = b(q, k, v, return_lse=True)
    # The same math by another route (exp(m + h) * sum exp(u - m) v): equal to rounding.
    close(out_a, out_b, "out", 1e-12)
    assert torch.equal(lse_a, lse_b), "stat differs from the softmax lse"
    gen = torch.Generator().manual_seed(2)
    dout, dlse = torch.randn(out_a.shape, dtype=F64, generator=gen), torch.randn(
        lse_a.shape, dtype=F64, generator=gen)
    ga = torch.autograd.grad((out_a * dout).sum() + (finite_or_zero(lse_a) * dlse).sum(), (q, k, v))
    gb = torch.autograd.grad((out_b * dout).sum() + (finite_or_zero(lse_b) * dlse).sum(), (q, k, v))
    for n, x, y in zip(["dq", "dk", "dv"], ga, gb):
        close(x, y, n, 1e-12)


@pytest.mark.parametrize("mask", ["none", "causal"])
def test_normalizers_none_equals_builtin_none(mask):
    mask_mod = None if mask == "none" else mods.causal
    score_mod = lambda s, b, h, q, k: torch.sigmoid(s - 1.0)  # noqa: E731
    a = ae.compile(score_mod, mask_mod, normalize=ae.normalizers.none)
    b = ae.compile(score_mod, mask_mod, normalize="none")
    q, k, v = (t.requires_grad_(True) for t in rand_qkv(2, 2, 2, 8, 8, 4, 4, seed=9))
    out_a, out_b = a(q, k, v), b(q, k, v)
    close(out_a, out_b, "out", 1e-12)
    dout = torch.randn(out_a.shape, dtype=F64, generator=torch.Generator().manual_seed(3))
    for n, x, y in zip(["dq", "dk", "dv"], torch.autograd.grad(out_a, (q, k, v), dout),
                       torch.autograd.grad(out_b, (q, k, v), dout)):
        close(x, y, n, 1e-12)


# ----------------------------------------------------------------------------------------------
# 6. bad inputs
# ----------------------------------------------------------------------------------------------

_COMPILE_ERRORS = (TraceError, GraphError, ValueError, TypeError)


def test_stat_with_log_domain_is_a_value_error():
    with pytest.raises(ValueError, match="(?i)stat"):
        ae.Normalizer(lambda x, b, h, q, k: x, lambda x, b, h, q, k: x, log_domain=True)


@pytest.mark.parametrize("bad", [42, None])
def test_weight_not_callable_is_a_type_error(bad):
    with pytest.raises(TypeError, match="(?i)callable|weight"):
        ae.Normalizer(bad)


def test_finish_not_callable_is_a_type_error():
    with pytest.raises(TypeError, match="(?i)callable|finish"):
        ae.compile(normalize=ae.Normalizer(lambda x, b, h, q, k: x, finish=3.0))


@pytest.mark.parametrize("bad", [42, "softmaxx"])
def test_bad_normalize_argument(bad):
    with pytest.raises((TypeError, ValueError), match="(?i)normaliz"):
        ae.compile(normalize=bad)


def test_weight_returning_bool_is_rejected_at_compile():
    with pytest.raises(_COMPILE_ERRORS, match="(?i)bool|float|weight|type|kind"):
        ae.compile(normalize=ae.Normalizer(lambda x, b, h, q, k: x > 0))


def test_finish_returning_bool_is_rejected_at_compile():
    with pytest.raises(_COMPILE_ERRORS, match="(?i)bool|float|finish|type|kind"):
        ae.compile(normalize=ae.Normalizer(lambda x, b, h, q, k: x,
                                           finish=lambda L, b, h, q: L > 1))


def test_log_domain_without_finish_is_the_builtin_softmax():
    """Softmax of a log-weight (a temperature) is lowered to the built-in softmax, whose fused
    kernels run it; a finish function or detach_stats keeps the custom path."""
    t = torch.ones(2)
    assert ae.compile(normalize=ae.normalizers.softmax_with_temperature(t)).variant.normalize \
        == "softmax"
    assert ae.compile(normalize=ae.normalizers.softmax).variant.key == \
        ae.compile(normalize="softmax").variant.key
    sink = ae.compile(normalize=ae.normalizers.softmax_with_sink(torch.zeros(2)))
    assert sink.variant.normalize == "custom"
    detached = ae.Normalizer(lambda x, b, h, q, k: x, log_domain=True, detach_stats=True)
    assert ae.compile(normalize=detached).variant.normalize == "custom"
    assert ae.compile(normalize=ae.normalizers.retention).variant.normalize == "custom"


@pytest.mark.parametrize("name", ["retention", "sink", "relu_normalized"])
def test_varlen_and_kv_cache_keep_the_normalization(name):
    """The inference entry points rewrite the graph (positions within each sequence, GQA
    packing): a normalization's functions, the per-row finish too, go along."""
    from attention_engine import inference
    torch.manual_seed(0)
    H, D = 4, 8
    norm = {"retention": ae.normalizers.retention,
            "sink": ae.normalizers.softmax_with_sink(torch.linspace(-1, 1, H, dtype=F64)),
            "relu_normalized": ae.normalizers.relu_normalized}[name]
    attn = ae.compile(mask_mod=mods.causal, normalize=norm)
    cu = torch.tensor([0, 3, 10, 12])
    q, k, v = (torch.randn(12, H, D, dtype=F64) for _ in range(3))
    out = inference.varlen(attn, q, k, v, cu, cu)
    for i in range(3):
        s, e = cu[i], cu[i + 1]
        seq = [x[s:e].transpose(0, 1)[None] for x in (q, k, v)]
        close(out[s:e], attn(*seq)[0].transpose(0, 1), f"sequence {i}", 1e-12)
    # One decode step against the cache (GQA: 2 kv heads), equal to the last row in full.
    kc, vc = (torch.randn(1, 9, 2, D, dtype=F64) for _ in range(2))
    qn = torch.randn(1, 1, H, D, dtype=F64)
    step = inference.with_kvcache(attn, qn, kc, vc, torch.tensor([9]))
    full = ae.compile(normalize=norm)(qn.transpose(1, 2), kc.transpose(1, 2), vc.transpose(1, 2))
    close(step, full.transpose(1, 2), "decode step", 1e-12)


@pytest.mark.parametrize("log_domain", [False, True], ids=["linear", "log"])
def test_finish_indexing_a_captured_tensor_by_the_statistic(log_domain):
    """A load in finish indexed by a function of L, next to loads in the score_mod and the
    weight: each function's pass evaluates its own loads only (the backward used to evaluate
    finish's table index before L existed)."""
    table = torch.tensor([1.0, 0.5, 0.25], dtype=F64, requires_grad=True)
    bias = torch.tensor([0.1, -0.2, 0.3, 0.0], dtype=F64, requires_grad=True)
    gain = torch.tensor([1.0, 0.8], dtype=F64, requires_grad=True)
    score_mod = lambda s, b, h, q, k: s + bias[k % 4]  # noqa: E731
    if log_domain:
        kw = dict(weight=lambda x, b, h, q, k: x * gain[h],
                  finish=lambda L, b, h, q: -L + torch.log(table[(L > 1.5).long() + (L > 2.5).long()]),
                  log_domain=True)
    else:
        kw = dict(weight=lambda x, b, h, q, k: torch.exp(x) * gain[h],
                  finish=lambda L, b, h, q: table[(L > 4).long() + (L > 8).long()] / L)
    attn = ae.compile(score_mod, mods.causal, normalize=ae.Normalizer(**kw))
    q, k, v = rand_qkv(1, 2, 2, 7, 7, 4, 3, seed=11)
    compare(attn, kw, q, k, v, [table, bias, gain], score_mod=score_mod, mask_mod=mods.causal)


def test_attention_module_with_a_normalizer_pickles():
    import io
    sink = torch.linspace(-1, 1, 2, dtype=F64)
    mod = ae.Attention(mask_mod=mods.causal, normalize=ae.normalizers.softmax_with_sink(sink))
    q, k, v = rand_qkv(1, 2, 2, 6, 6, 4, 4, seed=12)
    buf = io.BytesIO()
    torch.save(mod, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert torch.equal(loaded(q, k, v), mod(q, k, v))


def test_kv_cache_returns_the_statistic():
    from attention_engine import inference
    norm = ae.normalizers.retention
    kc, vc = (torch.randn(1, 9, 2, 8, dtype=F64) for _ in range(2))
    qn = torch.randn(1, 1, 2, 8, dtype=F64)
    out, stat = inference.with_kvcache(ae.compile(mask_mod=mods.causal, normalize=norm), qn, kc,
                                       vc, torch.tensor([9]), return_lse=True)
    full, full_stat = ae.compile(normalize=norm)(qn.transpose(1, 2), kc.transpose(1, 2),
                                                 vc.transpose(1, 2), return_lse=True)
    close(out, full.transpose(1, 2), "out", 1e-12)
    close_stat(stat, full_stat, "stat", 1e-12)  # [B, H, Sq] as the op returns it
