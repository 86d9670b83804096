"""Issue 16's items on the GPU (every test is marked gpu: skipped without CUDA): a compiled
training step with permuted q/k/v through the fused kernels, the module semantics with CUDA
tensors, a Hugging Face model against SDPA, flex_attention with torch's block masks, and the
demo's speed table.

    PYTHONPATH=python python -m pytest -q -rs tests/python/test_gpu_integration.py
"""
import pytest
import torch

import attention_engine as ae
from attention_engine import mods

pytestmark = pytest.mark.gpu

DEV = "cuda"
B, S, H, D = 2, 300, 4, 64


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


class QKVBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(H * D, 3 * H * D)
        self.out = torch.nn.Linear(H * D, H * D)
        self.attn = ae.Attention(mods.alibi(mods.alibi_slopes(H)), mods.causal)

    def forward(self, x):
        q, k, v = self.qkv(x).view(B, S, 3, H, D).permute(2, 0, 3, 1, 4)
        return self.out(self.attn(q, k, v).transpose(1, 2).reshape(B, S, H * D))


def test_compiled_training_step_with_permuted_qkv_on_the_kernels():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = QKVBlock().to(DEV, torch.bfloat16)  # .to() moves the captured slopes too
    x = torch.randn(B, S, H * D, device=DEV, dtype=torch.bfloat16)
    q = torch.empty(B, H, S, D, device=DEV, dtype=torch.bfloat16)
    assert model.attn.backend_for(q, q, q) in ("sm80", "sm90")

    def step(m):
        m.zero_grad()
        loss = m(x).float().square().mean()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in m.parameters()]
    eager_loss, eager_grads = step(model)
    with torch._inductor.config.patch(force_disable_caches=True):
        loss, grads = step(torch.compile(model, fullgraph=True))
    assert rel_err(loss, eager_loss) < 1e-2
    for g, e in zip(grads, eager_grads):
        assert rel_err(g, e) < 3e-2


def test_module_to_cuda_moves_captured_tensors():
    table = torch.nn.Parameter(0.1 * torch.randn(H, 17))
    attn = ae.Attention(mods.relative_bias(table, 8), mods.causal).to(DEV)
    q = torch.randn(B, H, S, D, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    out = attn(q, q, q)
    ref = attn.reference(q.float(), q.float(), q.float())
    assert rel_err(out, ref) < 2e-2
    out.float().sum().backward()
    assert attn.table.grad is not None and attn.table.grad.device.type == "cuda"


def test_flex_attention_with_torch_block_masks():
    from torch.nn.attention.flex_attention import and_masks, create_block_mask

    def window(b, h, q_idx, kv_idx):
        return q_idx - kv_idx < 64
    mask_mod = and_masks(mods.causal, window)
    q, k, v = (torch.randn(B, H, S, D, device=DEV, dtype=torch.bfloat16) for _ in range(3))
    theirs = create_block_mask(mask_mod, None, None, S, S, device=DEV)
    ours = ae.create_block_mask(mask_mod, None, None, S, S, device=DEV)
    ref = ae.compile(mask_mod=mask_mod).reference(q.float(), k.float(), v.float())
    for bm in (theirs, ours):
        assert rel_err(ae.flex_attention(q, k, v, block_mask=bm), ref) < 2e-2


def test_transformers_model_matches_sdpa_on_the_kernels():
    transformers = pytest.importorskip("transformers")
    import attention_engine.integrations.transformers as ae_hf

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=256, intermediate_size=512,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=512)
    ref = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    ours = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation=ae_hf.NAME)
    ours.load_state_dict(ref.state_dict())
    ref32 = ref.to(DEV).eval()
    x = torch.randint(3, 256, (2, 200), device=DEV)
    mask = torch.ones_like(x)
    mask[1, :37] = 0
    with torch.no_grad():
        want = ref32(x, attention_mask=mask).logits
        ref16 = ref32.to(torch.bfloat16)
        sdpa_err = rel_err(ref16(x, attention_mask=mask).logits[mask.bool()], want[mask.bool()])
        ours = ours.to(DEV, torch.bfloat16).eval()
        got = ours(x, attention_mask=mask).logits
    assert rel_err(got[mask.bool()], want[mask.bool()]) <= 2 * sdpa_err + 1e-3
    # Generation with the KV cache: each step's logits against SDPA's on the same tokens.
    with torch.no_grad():
        # The raw logits (output_logits), not the processed scores: min_new_tokens sets the
        # end-of-sequence score to -inf in those.
        gen = ours.generate(x[:, :50], attention_mask=mask[:, :50], max_new_tokens=20,
                            min_new_tokens=20, do_sample=False, output_logits=True,
                            return_dict_in_generate=True)
        full_mask = torch.cat([mask[:, :50], torch.ones_like(gen.sequences[:, 50:])], 1)
        teacher = ref16(gen.sequences, attention_mask=full_mask).logits[:, 49:-1]
    steps = torch.stack(gen.logits, 1)
    assert rel_err(steps, teacher) < 5e-2


def test_demo_speed_table():
    from attention_engine import demo

    rows = demo.speed_rows(B=1, H=8, S=2048, D=128, warmup=2, reps=5)
    methods = {r[1] for r in rows}
    assert {"attention_engine", "SDPA", "FlexAttention"} <= methods
    assert all(r[2] is None or r[2] > 0 for r in rows)
    text = demo.format_speed_table(rows)
    assert "TFLOPS" in text and "causal" in text


def test_custom_normalizations_on_cuda():
    """Custom normalizations run fused kernels on CUDA tensors and equal the CPU float64
    result (a softmax with a temperature is lowered to the built-in softmax)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, H, 256, D, device=DEV, dtype=torch.bfloat16) for _ in range(3))
    temperature = torch.rand(H) + 0.5

    def normalizers(dev):
        return [ae.normalizers.retention,
                ae.normalizers.softmax_with_sink(torch.linspace(-1, 1, H, device=dev)),
                ae.normalizers.softmax_with_temperature(temperature.to(dev))]

    for norm, cpu_norm in zip(normalizers(DEV), normalizers("cpu")):
        attn = ae.compile(mask_mod=mods.causal, normalize=norm)
        backend = attn.backend_for(q, k, v)
        assert not backend.startswith("reference"), (norm, backend)
        out = attn(q, k, v)
        ref = ae.compile(mask_mod=mods.causal, normalize=cpu_norm)(
            q.double().cpu(), k.double().cpu(), v.double().cpu())
        assert rel_err(out.cpu(), ref) < 2e-2, norm
