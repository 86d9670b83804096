"""The gfx90a forward and backward on an AMD GPU (ROCm builds of PyTorch, an MI210 / MI250):
outputs and LSE, and the gradients of q, k, v and of learnable captured tensors, against the
reference executor in float32 for the variants, head dims, dtypes and shapes the compile-all
check builds (tails, GQA, split-KV, V with inf at masked keys), and on the inference layouts
(packed sequences forward and backward, a KV cache's lengths and pages) against float64.
Written and reviewed without AMD hardware: nothing here has run yet (README, status; the
layouts' tests ran only with the tensors on the CPU, where the reference runs them). Skipped
elsewhere."""
import pytest
import torch

import attention_engine as ae
from attention_engine import mods

pytestmark = [pytest.mark.gpu, pytest.mark.amd_gpu,
              pytest.mark.skipif(not (torch.cuda.is_available() and torch.version.hip),
                                 reason="needs an AMD GPU and a ROCm build of PyTorch")]

DEV = "cuda"  # ROCm's PyTorch names HIP devices "cuda"


def _variants(S):
    docs = torch.arange(S, device=DEV) // 97
    return {
        "plain": ae.compile(),
        "causal": ae.compile(mask_mod=mods.causal),
        "alibi": ae.compile(mods.alibi(mods.alibi_slopes(8).to(DEV)), mods.causal),
        "softcap": ae.compile(mods.softcap(20.0)),
        "document": ae.compile(mask_mod=mods.document_mask(docs)),
        "sigmoid_none": ae.compile(mods.sigmoid(-2.0), normalize="none"),
    }


def _check(attn, q, k, v, tol):
    assert attn.backend_for(q, k, v).startswith("gfx90a"), attn.backend_for(q, k, v)
    out, lse = attn(q, k, v, return_lse=True)
    ref, ref_lse = attn.reference(q.float(), k.float(), v.float(), return_lse=True)
    torch.testing.assert_close(out.float(), ref, atol=tol, rtol=tol)
    if attn.normalize == "softmax":
        finite = torch.isfinite(ref_lse)
        torch.testing.assert_close(lse[finite], ref_lse[finite], atol=1e-3, rtol=1e-3)
        assert torch.equal(torch.isfinite(lse), finite)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("d", [64, 128, 256])
@pytest.mark.parametrize("name", ["plain", "causal", "alibi", "softcap", "document", "sigmoid_none"])
@pytest.mark.parametrize("S", [17, 1000])
def test_gfx90a_forward_matches_the_reference(name, d, dtype, S):
    g = torch.Generator(device="cpu").manual_seed(0)
    q = torch.randn(2, 8, S, d, generator=g).to(DEV, dtype)
    k = torch.randn(2, 2, S + 3, d, generator=g).to(DEV, dtype)  # GQA 4:1, Skv != Sq
    v = torch.randn(2, 2, S + 3, d, generator=g).to(DEV, dtype)
    attn = _variants(S + 3)[name]
    _check(attn, q, k, v, 2e-2 if dtype == torch.bfloat16 else 5e-3)


def test_gfx90a_split_kv_forward(monkeypatch):
    monkeypatch.setenv("AE_KV_SPLITS", "4")
    g = torch.Generator(device="cpu").manual_seed(1)
    q = torch.randn(1, 4, 3, 128, generator=g).to(DEV, torch.bfloat16)
    k, v = (torch.randn(1, 4, 5000, 128, generator=g).to(DEV, torch.bfloat16) for _ in range(2))
    for name in ("plain", "causal", "sigmoid_none"):
        _check(_variants(5000)[name], q, k, v, 2e-2)


def test_gfx90a_masked_keys_with_inf_in_v_change_nothing():
    g = torch.Generator(device="cpu").manual_seed(2)
    q, k, v = (torch.randn(1, 2, 200, 128, generator=g).to(DEV, torch.bfloat16) for _ in range(3))
    v[:, :, 150] = float("inf")  # masked for query rows < 150 under the causal mask
    attn = ae.compile(mask_mod=mods.causal)
    out = attn(q, k, v)
    assert torch.isfinite(out[:, :, :150]).all()
    assert not torch.isfinite(out[:, :, 150:]).any()  # plain math where the key is kept
    v[:, :, 150] = 0
    torch.testing.assert_close(out[:, :, :150], attn(q, k, v)[:, :, :150])


def _grads(fn, q, k, v, dout, extra=()):
    """The gradients of q, k, v and `extra` of fn(q, k, v) (the op, or the reference)."""
    leaves = [x.detach().clone().requires_grad_() for x in (q, k, v)]
    return torch.autograd.grad(fn(*leaves), leaves + list(extra), dout)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("dims", [(64, 64), (128, 128), (96, 64), (192, 128), (256, 256), (128, 256),
                                  (160, 160)], ids=lambda d: f"{d[0]}-{d[1]}")
@pytest.mark.parametrize("name", ["plain", "causal", "alibi", "softcap", "document", "sigmoid_none"])
@pytest.mark.parametrize("S", [17, 1000])
def test_gfx90a_backward_matches_the_reference(name, dims, dtype, S):
    g = torch.Generator(device="cpu").manual_seed(3)
    q = torch.randn(2, 8, S, dims[0], generator=g).to(DEV, dtype)
    k = torch.randn(2, 2, S + 3, dims[0], generator=g).to(DEV, dtype)  # GQA 4:1, Skv != Sq
    v = torch.randn(2, 2, S + 3, dims[1], generator=g).to(DEV, dtype)
    dout = torch.randn(2, 8, S, dims[1], generator=g).to(DEV, dtype)
    attn = _variants(S + 3)[name]
    assert attn.backend_for(q, k, v, backward=True).startswith("gfx90a"), \
        attn.backend_for(q, k, v, backward=True)
    got = _grads(attn, q, k, v, dout)
    want = _grads(attn.reference, q.float(), k.float(), v.float(), dout.float())
    tol = 3e-2 if dtype == torch.bfloat16 else 1e-2
    for x, ref, what in zip(got, want, ("dq", "dk", "dv")):
        scale = ref.abs().max().item()
        torch.testing.assert_close(x.float(), ref, atol=tol * scale, rtol=tol, msg=what)


def test_gfx90a_backward_of_a_learnable_table():
    g = torch.Generator(device="cpu").manual_seed(4)
    table = torch.randn(8, 65, generator=g).to(DEV).requires_grad_()
    attn = ae.compile(mods.relative_bias(table, 32), mods.causal)
    q, k, v, dout = (torch.randn(1, 8, 300, 128, generator=g).to(DEV, torch.bfloat16) for _ in range(4))
    got = _grads(attn, q, k, v, dout, [table])
    want = _grads(attn.reference, q.float(), k.float(), v.float(), dout.float(), [table])
    for x, ref in zip(got, want):
        torch.testing.assert_close(x.float(), ref, atol=3e-2 * ref.abs().max().item(), rtol=3e-2)


def test_gfx90a_deterministic_backward_repeats_its_bits():
    g = torch.Generator(device="cpu").manual_seed(5)
    q, k, v, dout = (torch.randn(2, 4, 1000, 128, generator=g).to(DEV, torch.bfloat16) for _ in range(4))
    attn = ae.compile(mask_mod=mods.causal, deterministic=True)
    assert attn.backend_for(q, k, v, backward=True).startswith("gfx90a")
    first = _grads(attn, q, k, v, dout)
    for _ in range(3):
        assert all(torch.equal(a, b) for a, b in zip(first, _grads(attn, q, k, v, dout)))
    want = _grads(attn.reference, q.float(), k.float(), v.float(), dout.float())
    for x, ref in zip(first, want):
        torch.testing.assert_close(x.float(), ref, atol=3e-2 * ref.abs().max().item(), rtol=3e-2)


def test_gfx90a_backward_past_d256_runs_the_reference():
    q = torch.randn(1, 2, 64, 272, device=DEV, dtype=torch.bfloat16)
    assert "no gfx90a backward" in ae.compile().backend_for(q, q, q, backward=True)


# ---- the inference layouts (issue 23): packed sequences, per-batch key lengths, pages ----

def _cu(lengths):
    return torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32, device=DEV)


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-12)).item()


@pytest.mark.parametrize("name", ["plain", "causal", "alibi"])
@pytest.mark.parametrize("kind", ["self", "decode"])
def test_gfx90a_varlen_on_the_packed_layout(name, kind, monkeypatch):
    """varlen on the kernels' packed-sequence layout (ragged lengths and an empty sequence;
    decode rows split into ranges), forward and backward, equal to float64."""
    from attention_engine import _C
    from attention_engine.inference import _positioned
    monkeypatch.setenv("AE_VARLEN", "kernel")
    if kind == "decode":
        monkeypatch.setenv("AE_KV_SPLITS", "4")
    attn = _variants(4352)[name]
    lk = [1, 17, 1000, 0, 2049, 300]
    lq = lk if kind == "self" else [min(1, n) for n in lk]
    gen = torch.Generator(device=DEV).manual_seed(0)
    mk = lambda lens, h: torch.randn(sum(lens), h, 128, device=DEV, dtype=torch.bfloat16,
                                     generator=gen).requires_grad_()
    q, k, v = mk(lq, 8), mk(lk, 2), mk(lk, 2)
    cq, ck = _cu(lq), _cu(lk)
    lq_t, lk_t = (cq[1:] - cq[:-1]).long(), (ck[1:] - ck[:-1]).long()
    backend = _C.varlen_backend_for(q, k, v, list(attn.buffers) + [lk_t - lq_t, lk_t],
                                    _positioned(attn).key, cq, ck, max(lq), max(lk))
    assert backend == "gfx90a (packed sequences)", backend
    out, lse = attn.varlen(q, k, v, cq, ck, return_lse=True)
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref, ref_lse = attn.varlen(q64, k64, v64, cq, ck, return_lse=True)
    assert _rel(out, ref) < 2e-2
    fin = torch.isfinite(ref_lse)
    assert torch.equal(fin, torch.isfinite(lse))
    assert (lse.double()[fin] - ref_lse[fin]).abs().max().item() < 2e-2
    if kind == "self":
        dout = torch.randn_like(out)
        got = torch.autograd.grad(out, (q, k, v), dout)
        want = torch.autograd.grad(ref, (q64, k64, v64), dout.double())
        for what, a, b in zip(("dq", "dk", "dv"), got, want):
            assert _rel(a, b) < 3e-2, what


@pytest.mark.parametrize("page", [0, 16, 64])
@pytest.mark.parametrize("name", ["plain", "causal", "alibi"])
def test_gfx90a_kvcache_on_lengths_and_pages(name, page):
    """with_kvcache on a contiguous cache (per-batch key lengths) and on shuffled pages (NaN
    past each length and in spare pages; table entries past each sequence's pages -1 or past
    the pool) read in place, equal to float64."""
    from attention_engine import _C
    from attention_engine.inference import _positioned
    attn = _variants(4352)[name]
    gen = torch.Generator(device=DEV).manual_seed(1)
    lens = torch.tensor([20, 33, 1000, 2049], device=DEV)  # (at least sq)
    B, sq, cap, d = 4, 20, 2112, 128
    kc, vc = (torch.randn(B, cap, 2, d, device=DEV, dtype=torch.bfloat16, generator=gen) for _ in range(2))
    past = torch.arange(cap, device=DEV)[None, :] >= lens[:, None]
    kz, vz = (x.double().masked_fill(past[:, :, None, None], 0.0) for x in (kc, vc))
    kc[past], vc[past] = float("nan"), float("nan")
    q = torch.randn(B, sq, 8, d, device=DEV, dtype=torch.bfloat16, generator=gen)
    ref = attn.with_kvcache(q.double(), kz, vz, lens)
    if not page:
        out = attn.with_kvcache(q, kc, vc, lens)
    else:
        per = cap // page
        perm = torch.randperm(B * per, device=DEV, generator=gen)
        table = perm.view(B, per).to(torch.int32)
        kp = torch.full((B * per + 3, page, 2, d), float("nan"), device=DEV, dtype=torch.bfloat16)
        vp = kp.clone()
        kp[perm], vp[perm] = kc.reshape(B * per, page, 2, d), vc.reshape(B * per, page, 2, d)
        unused = torch.arange(per, device=DEV)[None, :] >= (-(-lens // page))[:, None]
        table[unused] = torch.where(torch.arange(int(unused.sum()), device=DEV) % 2 == 0, -1,
                                    B * per + 10).to(torch.int32)
        backend = _C.paged_backend_for(q.transpose(1, 2), kp.transpose(1, 2), vp.transpose(1, 2),
                                       list(attn.buffers) + [lens], _positioned(attn, None, sq).key,
                                       table)
        assert backend == "gfx90a (pages in place)", backend
        out = attn.with_kvcache(q, kp, vp, lens, block_table=table)
    assert torch.isfinite(out).all()
    assert _rel(out, ref) < 2e-2
