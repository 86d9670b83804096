"""The autotuner on a GPU (csrc/torch/autotune.h): one small case tuned end to end (candidates
compiled, timed with CUDA events, the choice stored), the tuned output and gradients against
the reference executor, the second call served by the stored choice without tuning (in this
process and, from its file, as another process would), captured tensors' gradients not
inflated by the timing runs, a random sample of candidates checked against the reference, and
the ahead-of-time sweep of `python -m attention_engine.tune`.

    PYTHONPATH=python python -m pytest -q -rs tests/python/test_gpu_tune.py
"""
import random

import pytest
import torch

import attention_engine as ae
from attention_engine import _C, _progress, mods

pytestmark = pytest.mark.gpu

DEV = "cuda"


@pytest.fixture
def reports(monkeypatch):
    """Tuning from an empty store, with a short budget; yields the progress reports made."""
    for name in ("AE_AUTOTUNE", "AE_SM90_FWD", "AE_SM80_FWD", "AE_SM80_BWD", "AE_KV_SPLITS",
                 "AE_PERSISTENT", "AE_DISABLE_SM90", "AE_DISABLE_SM90_BWD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AE_TUNE_BUDGET", "20")
    _C.tune_clear()
    seen = []

    def record(*args):
        seen.append(args)
        _progress.report(*args)  # the bar as users see it (pytest -s shows it)

    _C.tune_set_progress(record)
    yield seen
    _C.tune_set_progress(_progress.report)
    _C.tune_clear()


def _close(got, want, what):
    err = (got.float() - want.float()).abs().max().item()
    assert err <= 2e-2 * want.float().abs().max().item() + 2e-3, (what, err)


def _qkv(d=64, s=1000, seed=0, grad=False):
    torch.manual_seed(seed)
    q = torch.randn(1, 8, s, d, device=DEV, dtype=torch.bfloat16)
    k = torch.randn(1, 2, s, d, device=DEV, dtype=torch.bfloat16)
    v = torch.randn(1, 2, s, d, device=DEV, dtype=torch.bfloat16)
    return [t.requires_grad_(grad) for t in (q, k, v)]


def test_tunes_once_and_then_reads_the_stored_choice(reports):
    attn = ae.compile(mask_mod=mods.causal, autotune=True)
    q, k, v = _qkv(grad=True)
    out = attn(q, k, v)
    dout = torch.randn_like(out)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), dout)
    torch.cuda.synchronize()
    finished = [r for r in reports if r[4]]
    assert [r[0].split()[0] for r in finished] == ["fwd", "bwd"], reports
    assert any(r[1] == "compile" for r in reports) and any(r[1] == "time" for r in reports)
    stored = _C.tune_list()
    assert len(stored) == 2 and all(attn.key in c["key"] and c["ms"] > 0 for c in stored)
    assert all(c["timed"] >= 1 and c["ms"] <= c["table_ms"] for c in stored), stored

    # The tuned kernels against the reference executor (the same bf16 inputs, fp32 math).
    qr, kr, vr = (t.detach().requires_grad_() for t in (q, k, v))
    ref = attn.reference(qr, kr, vr)
    _close(out, ref, "out")
    for got, want, name in zip((dq, dk, dv), torch.autograd.grad(ref, (qr, kr, vr), dout), "qkv"):
        _close(got, want, "d" + name)

    # Another call of the class (other lengths in the same buckets): no tuning.
    reports.clear()
    q2, k2, v2 = _qkv(s=900, seed=1)
    _close(attn(q2, k2, v2), attn.reference(q2, k2, v2), "out, stored choice")
    assert reports == [] and len(_C.tune_list()) == 2
    # As another process: memory dropped, the choice read from its file, never tuned again.
    _C.tune_forget()
    ae.compile(mask_mod=mods.causal, autotune="cached")
    attn(q2, k2, v2)
    assert reports == []


def test_cached_mode_never_tunes(reports):
    attn = ae.compile(mods.softcap(20.0), autotune="cached")
    q, k, v = _qkv()
    _close(attn(q, k, v), attn.reference(q, k, v), "out")
    assert reports == [] and _C.tune_list() == []


def test_captured_gradients_are_not_inflated_by_the_timing_runs(reports):
    table = torch.randn(8, 65, device=DEV) * 0.1
    table.requires_grad_(True)
    attn = ae.compile(mods.relative_bias(table, 32), mods.causal, autotune=True)
    q, k, v = _qkv(d=128, s=512, grad=True)
    out = attn(q, k, v)
    dout = torch.randn_like(out)
    (got,) = torch.autograd.grad(out, (table,), dout)
    assert any(r[4] and r[0].startswith("bwd") for r in reports)
    ref = attn.reference(q, k, v)
    (want,) = torch.autograd.grad(ref, (table,), dout)
    _close(got, want, "table.grad")


def _forced(choice: str, monkeypatch):
    for item in choice.split():
        name, value = item.split("=")
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("kind", ["fwd", "bwd"])
def test_a_random_sample_of_candidates_matches_the_reference(kind, monkeypatch):
    major, minor = torch.cuda.get_device_capability()
    device = "h100" if (major, minor) == (9, 0) else "a100"
    attn = ae.compile(mods.alibi(mods.alibi_slopes(8, device=DEV)), mods.causal)
    problem = dict(kind=kind, batch=1, q_heads=8, kv_heads=2, q_len=700, kv_len=700, d_qk=64, d_v=64)
    cands = _C.tune_candidates(attn.key, problem, device)
    sample = [cands[0]] + random.Random(22).sample(cands[1:], min(4, len(cands) - 1))
    for c in sample:
        with monkeypatch.context() as m:
            _forced(c["choice"], m)
            q, k, v = _qkv(s=700, grad=kind == "bwd")
            out = attn(q, k, v)
            ref = attn.reference(q, k, v)
            _close(out, ref, c["choice"])
            if kind == "bwd":
                dout = torch.randn_like(out)
                got = torch.autograd.grad(out, (q, k, v), dout)
                want = torch.autograd.grad(ref, (q, k, v), dout)
                for g, w, name in zip(got, want, "qkv"):
                    _close(g, w, f"{c['choice']} d{name}")


def test_ahead_of_time_sweep_from_the_command_line(reports, capsys):
    from attention_engine import tune
    assert tune.main(["--variant", "sliding_window:128", "--shape", "1x8x2x512x64",
                      "--budget", "30"]) == 0
    out = capsys.readouterr().out
    assert "2 choices stored" in out, out
    assert [r[0].split()[0] for r in reports if r[4]] == ["fwd", "bwd"]
    # The stored choices serve calls of the same class with autotune="cached" (no tuning).
    reports.clear()
    attn = ae.compile(mask_mod=mods.sliding_window(128), autotune="cached")
    q, k, v = _qkv(s=512)
    _close(attn(q, k, v), attn.reference(q, k, v), "out")
    assert reports == []
