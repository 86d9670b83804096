"""ae.Attention owns the tensors its mods capture and behaves like any nn.Module (issue 16,
item 2): registration, state_dict, load_state_dict(assign=True), parameter replacement on
conversion, deepcopy and pickling, .to(), meta-device initialization, functional_call."""
import copy
import io

import torch

import attention_engine as ae
from attention_engine import mods
from conftest import assert_close, oracle, rand_qkv

H, MAXD = 4, 4


def make(dtype=torch.float64):
    table = torch.nn.Parameter(torch.randn(H, 2 * MAXD + 1, dtype=dtype))
    slopes = mods.alibi_slopes(H).to(dtype)

    def biased(score, b, h, q_idx, kv_idx):
        d = torch.clamp(q_idx - kv_idx, -MAXD, MAXD) + MAXD
        return score + table[h, d] + slopes[h] * (kv_idx - q_idx)
    return ae.Attention(biased, mods.causal)


def expected(attn, q, k, v):
    table, slopes = attn.table, attn.slopes

    def biased(score, b, h, q_idx, kv_idx):
        d = torch.clamp(q_idx - kv_idx, -MAXD, MAXD) + MAXD
        return score + table[h, d] + slopes[h] * (kv_idx - q_idx)
    return oracle(q, k, v, biased, mods.causal)[0]


def check_reads_current_tensors(attn):
    """Output and gradient of the module against the oracle with its registered tensors."""
    q, k, v = rand_qkv(HQ=H, HKV=H, SQ=12, SKV=12, dtype=attn.table.dtype)
    out = attn(q, k, v)
    assert_close(out, expected(attn, q, k, v), 1e-6, "out")
    out.sum().backward()
    assert attn.table.grad is not None, "the registered parameter got no gradient"


def test_captured_tensors_are_registered_under_their_names():
    attn = make()
    assert [n for n, _ in attn.named_parameters()] == ["table"]
    assert [n for n, _ in attn.named_buffers()] == ["slopes"]
    assert sorted(attn.state_dict()) == ["slopes", "table"]


def test_load_state_dict_assign_reaches_the_op():
    attn, other = make(), make()
    other.load_state_dict(attn.state_dict(), assign=True)
    assert other.table is not attn.table
    q, k, v = rand_qkv(HQ=H, HKV=H, SQ=12, SKV=12, requires_grad=False)
    assert_close(other(q, k, v), attn(q, k, v), 1e-12, "loaded module")
    check_reads_current_tensors(other)


def test_overwrite_params_on_conversion():
    attn = make(torch.float32)
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        old = attn.table
        attn.to(torch.float64)
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(False)
    assert attn.table is not old and attn.table.dtype == torch.float64
    check_reads_current_tensors(attn)


def test_deepcopy_and_pickle():
    attn = make()
    twin = copy.deepcopy(attn)
    assert twin.table is not attn.table and torch.equal(twin.table, attn.table)
    with torch.no_grad():
        twin.table.mul_(-3.0)  # (a constant shift would leave softmax unchanged)
    q, k, v = rand_qkv(HQ=H, HKV=H, SQ=12, SKV=12, requires_grad=False)
    assert not torch.allclose(twin(q, k, v), attn(q, k, v)), "the copy read the original"
    check_reads_current_tensors(twin)
    buf = io.BytesIO()
    torch.save(attn, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert_close(loaded(q, k, v), attn(q, k, v), 1e-12, "unpickled module")
    compiled = ae.compile(mods.alibi(torch.ones(H, dtype=torch.float64)))
    assert_close(copy.deepcopy(compiled)(q, k, v), compiled(q, k, v), 1e-12, "deepcopy")


def test_meta_device_init_then_to_empty():
    with torch.device("meta"):
        attn = make()
    assert attn.table.is_meta
    attn.to_empty(device="cpu")
    with torch.no_grad():
        attn.table.normal_()
        attn.slopes.copy_(mods.alibi_slopes(H))
    check_reads_current_tensors(attn)


def test_module_to_moves_buffers_and_params():
    attn = make(torch.float32)
    attn.to(torch.float64)  # without the future flag: .data swapped, buffers replaced
    assert attn.slopes.dtype == torch.float64
    check_reads_current_tensors(attn)


def test_fsdp_style_replacement_and_functional_call():
    attn = make()
    q, k, v = rand_qkv(HQ=H, HKV=H, SQ=12, SKV=12, requires_grad=False)
    new = torch.randn_like(attn.table)
    out = torch.func.functional_call(attn, {"table": new}, (q, k, v))
    ref = oracle(q, k, v, make_like(new, attn.slopes), mods.causal)[0]
    assert_close(out, ref, 1e-10, "functional_call")
    # FSDP (use_orig_params=False) swaps in plain tensors: delete the parameter, set a view.
    flat = torch.randn(new.numel(), dtype=new.dtype, requires_grad=True)
    del attn.table
    attn.table = flat.view_as(new)
    out = attn(q, k, v)
    out.sum().backward()
    assert flat.grad is not None and flat.grad.abs().sum() > 0


def make_like(table, slopes):
    def biased(score, b, h, q_idx, kv_idx):
        d = torch.clamp(q_idx - kv_idx, -MAXD, MAXD) + MAXD
        return score + table[h, d] + slopes[h] * (kv_idx - q_idx)
    return biased


def test_parent_module_shares_the_parameter():
    class Parent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Parameter(torch.zeros(H, 2 * MAXD + 1, dtype=torch.float64))
            self.attn = ae.Attention(mods.relative_bias(self.table, MAXD))

    p = Parent()
    assert p.attn.table is p.table
    assert len(list(p.parameters())) == 1  # deduplicated, as tied parameters are
    assert repr(p.attn).startswith("Attention(score_mod=relative_bias_mod")


def test_computed_captured_tensor_is_read_as_it_is():
    """A view of a parameter is not registered: the gradient reaches the parameter."""
    weights = torch.nn.Parameter(torch.randn(2, H, 2 * MAXD + 1, dtype=torch.float64))
    attn = ae.Attention(mods.relative_bias(weights[1], MAXD))
    assert list(attn.parameters()) == [] and list(attn.buffers()) == []
    q, k, v = rand_qkv(HQ=H, HKV=H, SQ=12, SKV=12)
    attn(q, k, v).sum().backward()
    assert weights.grad[1].abs().sum() > 0 and weights.grad[0].abs().sum() == 0
