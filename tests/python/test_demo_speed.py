"""The demo's speed table (issue 16): on a GPU, `python -m attention_engine.demo` also prints
the fused kernels' TFLOPS beside SDPA's and FlexAttention's (the GPU test runs that); here,
the same code on the CPU with tiny shapes."""
import torch

from attention_engine import demo


def test_speed_table_plumbing_on_the_cpu():
    rows = demo.speed_rows(B=1, H=2, S=64, D=16, warmup=0, reps=1, device="cpu",
                           dtype=torch.float32, compile_flex=False)
    assert [r[0] for r in rows if r[1] == "attention_engine"] == list(demo.SPEED_VARIANTS)
    assert [r[0] for r in rows if r[1] == "SDPA"] == ["causal"]  # the only one SDPA expresses
    for variant, method, fwd, fb in rows:
        if method != "FlexAttention":  # torch's flex_attention has no backward on the CPU
            assert fwd > 0 and fb > 0, (variant, method)
    text = demo.format_speed_table(rows, "header")
    assert text.splitlines()[0] == "header" and len(text.splitlines()) == len(rows) + 2


def test_kept_fraction():
    assert abs(demo.create_kept(demo.mods.causal, 64, "cpu") - 65 / 128) < 1e-9
