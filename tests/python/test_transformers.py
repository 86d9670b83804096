"""Hugging Face Transformers with attn_implementation="attention_engine" (issue 16): tiny
random-init models (no download) against the same weights with SDPA, on the CPU (the
reference executor; the GPU test runs the kernels): the model's own masks (causal, padding,
packed sequences, sliding window, ready-made 4-D masks), Gemma 2's softcap, gpt-oss's
attention sinks, generation with the KV cache, training gradients."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

import attention_engine as ae  # noqa: E402
import attention_engine.integrations.transformers as ae_hf  # noqa: E402  (registers it)
from conftest import assert_close  # noqa: E402

VOCAB = 97


def tiny(kind: str, **extra):
    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2, **extra)
    if kind == "llama":
        return transformers.LlamaConfig(**common)
    if kind == "mistral":
        return transformers.MistralConfig(sliding_window=6, **common)
    if kind == "gpt_oss":
        return transformers.GptOssConfig(head_dim=16, sliding_window=6, num_local_experts=4,
                                         num_experts_per_tok=2, **common)
    if kind == "gemma2":
        return transformers.Gemma2Config(head_dim=16, sliding_window=6,
                                         attn_logit_softcapping=5.0,
                                         final_logit_softcapping=None,
                                         query_pre_attn_scalar=16, **common)
    raise ValueError(kind)


def pair(kind: str, dtype=torch.float64, **extra):
    """(ours, SDPA's): the same random weights, float64, eval mode. (Gemma 2 and gpt-oss have
    no SDPA path, for the softcap and the attention sinks: their eager attention is the
    reference.)"""
    torch.manual_seed(0)
    cfg = tiny(kind, **extra)
    ref = transformers.AutoModelForCausalLM.from_config(
        cfg, attn_implementation="eager" if kind in ("gemma2", "gpt_oss") else "sdpa")
    ours = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation=ae_hf.NAME)
    ours.load_state_dict(ref.state_dict())
    return ours.to(dtype).eval(), ref.to(dtype).eval()


def ran_engine(fn):
    """fn()'s result, and whether attention_engine's op ran during it."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        result = fn()
    names = {e.name for e in prof.events()}
    return result, "attention_engine::attention" in names


def ids(batch, length, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, length), generator=gen)


@pytest.mark.parametrize("kind", ["llama", "mistral", "gemma2", "gpt_oss"])
def test_forward_matches_sdpa(kind):
    # gpt-oss's experts (grouped matmuls) have no float64 kernel on the CPU.
    dtype = torch.float32 if kind == "gpt_oss" else torch.float64
    ours, ref = pair(kind, dtype)
    x = ids(2, 20)
    out, ran = ran_engine(lambda: ours(x).logits)
    assert ran and ours.config._attn_implementation == "attention_engine"
    assert_close(out, ref(x).logits, 1e-9 if dtype == torch.float64 else 1e-4, f"{kind} logits")


def test_ready_made_4d_masks():
    """A caller's own 4-D mask reaches the attention as it is: bool (True keeps) or additive."""
    ours, ref = pair("llama")
    x = ids(2, 12)
    keep = torch.ones(2, 1, 12, 12, dtype=torch.bool).tril()
    keep[1, :, :, :4] = False
    keep[1, :, :4, :4] = torch.ones(4, 4, dtype=torch.bool).tril()  # rows keep something
    for mask in (keep, torch.zeros(keep.shape, dtype=torch.float64).masked_fill(~keep, -1e9)):
        got = ours(x, attention_mask=mask).logits
        assert_close(got, ref(x, attention_mask=mask).logits, 1e-9, str(mask.dtype))


def test_padding_mask():
    ours, ref = pair("llama")
    x = ids(2, 16)
    mask = torch.ones_like(x)
    mask[0, :5] = 0  # left padding
    mask[1, 12:] = 0  # right padding
    got = ours(x, attention_mask=mask).logits
    want = ref(x, attention_mask=mask).logits
    keep = mask.bool()
    assert_close(got[keep], want[keep], 1e-9, "padded logits")


def test_packed_sequences():
    """position_ids that restart mark packed documents: no attention across them."""
    ours, ref = pair("llama")
    x = ids(1, 18)
    pos = torch.tensor([list(range(7)) + list(range(11))])
    # (Transformers looks for packing only without a cache: training's setting.)
    got = ours(x, position_ids=pos, use_cache=False).logits
    assert_close(got, ref(x, position_ids=pos, use_cache=False).logits, 1e-9, "packed")
    alone = ours(x[:, 7:], position_ids=pos[:, 7:], use_cache=False).logits
    assert_close(got[:, 7:], alone, 1e-9, "second document alone")


@pytest.mark.parametrize("kind", ["llama", "gemma2"])
def test_generation_with_kv_cache(kind):
    ours, ref = pair(kind)
    x = ids(2, 9)
    mask = torch.ones_like(x)
    mask[1, :3] = 0
    kw = dict(attention_mask=mask, max_new_tokens=10, do_sample=False, min_new_tokens=10)
    before = set(ae.api._VARIANTS)
    got, ran = ran_engine(lambda: ours.generate(x, **kw))
    assert ran
    assert torch.equal(got, ref.generate(x, **kw))
    # Offsets and padding are captured tensors: every step of every layer of a kind runs one
    # variant (one kernel on a GPU); gemma2 has two kinds (sliding window and full). With
    # grouped-query attention, calls of at most 16 queries run it GQA-packed
    # (gqa_pack.packed_call): one packed variant per query count, here the prompt's 9 and 1.
    from attention_engine import gqa_pack
    keys = {ae.api._VARIANTS[t].key for t in set(ae.api._VARIANTS) - before}
    packed = keys & set(gqa_pack._PACKED.values())
    kinds = 2 if kind == "gemma2" else 1
    assert len(keys - packed) <= kinds, keys
    assert 1 <= len(packed) <= 2 * kinds, packed  # GQA 4:2: decode's calls pack


def test_training_gradients_match_sdpa():
    ours, ref = pair("mistral")
    ours.train()
    ref.train()
    x = ids(2, 14)
    ours(x, labels=x).loss.backward()
    ref(x, labels=x).loss.backward()
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        assert_close(a.grad, b.grad, 1e-9, name)


def test_dropout_in_training_is_refused():
    torch.manual_seed(0)
    cfg = tiny("llama", attention_dropout=0.1)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation=ae_hf.NAME)
    with pytest.raises(ValueError, match="does not implement attention dropout"):
        model.train()(ids(1, 8))
