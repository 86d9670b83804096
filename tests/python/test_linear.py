"""Linear attention's reference path (attention_engine.linear): every ready definition against
a float64 token-by-token recurrence written here (S_t = diag(exp(a_t)) S_{t-1} + k_t v_t^T,
o_t = scale q_t^T S_t, with the definition's feature maps written out): outputs, final
states, gradients of q, k, v, g and captured tensors; odd lengths across chunk boundaries,
ragged packed batches with initial states, token-by-token calls through the state equal to
one call, gradcheck, and the errors of bad inputs."""
import math

import pytest
import torch

import attention_engine as ae



@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)  # each test's inputs the same whatever ran before it


def recurrent(q, k, v, a, scale, state=None):
    """float64, one token at a time. a: [B, H, T] or [B, H, T, Dk] natural-log decays."""
    B, H, T, Dk = q.shape
    S = torch.zeros(B, H, Dk, v.shape[-1], dtype=torch.float64) if state is None else state.double()
    outs = []
    for t in range(T):
        d = torch.exp(a[:, :, t].double())
        S = (d[..., None] if a.dim() == 4 else d[..., None, None]) * S + \
            k[:, :, t, :, None].double() * v[:, :, t, None, :].double()
        outs.append(scale * (q[:, :, t, None, :].double() @ S)[:, :, 0])
    return torch.stack(outs, dim=2), S


def inputs(B, H, T, Dk, Dv, kind, dtype=torch.float64):
    q, k, v = (torch.randn(B, H, T, d, dtype=dtype) * 0.5 for d in (Dk, Dk, Dv))
    if kind == "gla":
        g = torch.nn.functional.logsigmoid(torch.randn(B, H, T, Dk, dtype=dtype)) / 8
    elif kind == "mamba2":
        g = torch.nn.functional.softplus(torch.randn(B, H, T, dtype=dtype) - 1)
    elif kind == "simple_gla":
        g = torch.nn.functional.logsigmoid(torch.randn(B, H, T, dtype=dtype)) / 4
    else:
        g = None
    return q, k, v, g


def oracle(kind, H, q, k, v, g, A_log=None, state=None):
    """The definition's math written out, then the recurrence."""
    Dk = q.shape[-1]
    if kind == "retention":
        gamma = 1 - 2.0 ** (-5 - torch.arange(H, dtype=torch.float64))
        a = torch.log(gamma)[None, :, None].expand(q.shape[:3])
        return recurrent(q, k, v, a, Dk ** -0.5, state)
    if kind in ("simple_gla", "gla"):
        return recurrent(q, k, v, g, Dk ** -0.5, state)
    a = g * -torch.exp(A_log.double())[None, :, None]  # mamba2
    return recurrent(q, k * g[..., None], v, a, 1.0, state)


def definition(kind, H, A_log=None):
    return {"retention": lambda: ae.linear.retention(H), "simple_gla": ae.linear.simple_gla,
            "gla": ae.linear.gla, "mamba2": lambda: ae.linear.mamba2(A_log)}[kind]()


KINDS = ["retention", "simple_gla", "gla", "mamba2"]


@pytest.mark.parametrize("T", [1, 63, 130, 500])
@pytest.mark.parametrize("kind", KINDS)
def test_ready_definitions_match_the_recurrence(kind, T):
    B, H, Dk, Dv = 2, 3, 16, 8
    q, k, v, g = inputs(B, H, T, Dk, Dv, kind)
    A_log = torch.randn(H, dtype=torch.float64) * 0.3
    state0 = torch.randn(B, H, Dk, Dv, dtype=torch.float64) * 0.1
    leaves = [t for t in (q, k, v, g, A_log) if t is not None]
    for t in leaves:
        t.requires_grad_(True)
    lin = definition(kind, H, A_log)
    o, s = lin(q, k, v, g, initial_state=state0, output_final_state=True)
    want_o, want_s = oracle(kind, H, q, k, v, g, A_log, state0)
    assert o.dtype == torch.float64 and o.shape == (B, H, T, Dv) and s.shape == (B, H, Dk, Dv)
    assert torch.allclose(o, want_o, atol=1e-10, rtol=1e-9)
    assert torch.allclose(s, want_s, atol=1e-10, rtol=1e-9)
    do, ds = torch.randn_like(o), torch.randn_like(s)
    used = leaves if kind == "mamba2" else [t for t in leaves if t is not A_log]
    got = torch.autograd.grad((o * do).sum() + (s * ds).sum(), used)
    want = torch.autograd.grad((want_o * do).sum() + (want_s * ds).sum(), used)
    for x, y in zip(got, want):
        assert torch.allclose(x, y, atol=1e-9, rtol=1e-8)


@pytest.mark.parametrize("kind", ["retention", "gla"])
def test_low_precision_inputs_keep_an_fp32_state(kind):
    q, k, v, g = inputs(1, 2, 200, 32, 32, kind, torch.float64)
    lin = definition(kind, 2)
    o = lin(q.bfloat16(), k.bfloat16(), v.bfloat16(), None if g is None else g.float())
    want, _ = oracle(kind, 2, q.bfloat16().double(), k.bfloat16().double(),
                     v.bfloat16().double(), g)
    assert o.dtype == torch.bfloat16
    assert (o.double() - want).abs().max() <= 1e-2 * want.abs().max()


@pytest.mark.parametrize("kind", KINDS)
def test_packed_sequences_reset_the_state(kind):
    H, Dk, Dv = 2, 8, 8
    lens = [5, 64, 1, 131]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()])
    q, k, v, g = inputs(1, H, sum(lens), Dk, Dv, kind)
    A_log = torch.randn(H, dtype=torch.float64) * 0.3
    init = torch.randn(len(lens), H, Dk, Dv, dtype=torch.float64)
    o, s = definition(kind, H, A_log)(q, k, v, g, initial_state=init, output_final_state=True,
                                      cu_seqlens=cu)
    for i, (a, b) in enumerate(zip(cu.tolist(), cu.tolist()[1:])):
        gi = None if g is None else g[:, :, a:b]
        wo, ws = oracle(kind, H, q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], gi, A_log, init[i:i + 1])
        assert torch.allclose(o[:, :, a:b], wo, atol=1e-10), i
        assert torch.allclose(s[i:i + 1], ws, atol=1e-10), i


def test_token_by_token_calls_equal_one_call():
    """Decoding through the returned state is the chunked forward."""
    q, k, v, g = inputs(2, 2, 70, 8, 8, "gla")
    lin = ae.linear.gla()
    full, s_full = lin(q, k, v, g, output_final_state=True)
    state, outs = None, []
    for t in range(70):
        o, state = lin(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], g[:, :, t:t + 1],
                       initial_state=state, output_final_state=True)
        outs.append(o)
    assert torch.allclose(torch.cat(outs, 2), full, atol=1e-12)
    assert torch.allclose(state, s_full, atol=1e-12)


def test_chunk_size_does_not_change_the_result():
    q, k, v, g = inputs(1, 2, 100, 8, 8, "simple_gla")
    a = ae.compile_linear(decay_mod=lambda g, b, h, t: g, chunk_size=7)(q, k, v, g)
    b = ae.compile_linear(decay_mod=lambda g, b, h, t: g, chunk_size=64)(q, k, v, g)
    assert torch.allclose(a, b, atol=1e-12)


def test_feature_maps_and_index_arguments():
    """Feature maps see the element and (b, h, t, d); t restarts in each packed sequence."""
    q, k, v, _ = inputs(1, 2, 20, 4, 4, "retention")
    lin = ae.compile_linear(q_mod=lambda x, b, h, t, d: torch.relu(x) + 0.1 * d,
                            k_mod=lambda x, b, h, t, d: torch.exp(x) * (t + 1),
                            v_mod=lambda x, b, h, t, d: x * (h + 1), scale=1.0)
    i = torch.arange(20, dtype=torch.float64)[:, None]
    d = torch.arange(4)  # an int64 index: 0.1 * d is float32, as in the mod
    want, _ = recurrent(torch.relu(q) + 0.1 * d, torch.exp(k) * (i + 1),
                        v * torch.tensor([1.0, 2.0]).double()[None, :, None, None],
                        torch.zeros(1, 2, 20), 1.0)
    assert torch.allclose(lin(q, k, v), want, rtol=1e-9, atol=1e-10)
    cu = torch.tensor([0, 8, 20])
    got = lin(q, k, v, cu_seqlens=cu)
    second, _ = recurrent(torch.relu(q[:, :, 8:]) + 0.1 * d, torch.exp(k[:, :, 8:]) * (i[:12] + 1),
                          v[:, :, 8:] * torch.tensor([1.0, 2.0]).double()[None, :, None, None],
                          torch.zeros(1, 2, 12), 1.0)
    assert torch.allclose(got[:, :, 8:], second, rtol=1e-9, atol=1e-10)


def test_gradcheck_gla_and_mamba2():
    q, k, v, g = inputs(1, 2, 9, 3, 2, "gla")
    for t in (q, k, v, g):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda *x: ae.linear.gla()(*x, output_final_state=True),
                                    (q, k, v, g))
    q, k, v, g = inputs(1, 2, 9, 3, 2, "mamba2")
    A_log = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    for t in (q, k, v, g):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda q, k, v, g, A: ae.linear.mamba2(A)(q, k, v, g),
                                    (q, k, v, g, A_log))


def test_strong_decays_stay_finite():
    """Log-decays of -80 per token: every exp in the chunked form is of a difference <= 0."""
    q, k, v, _ = inputs(1, 1, 128, 4, 4, "gla", torch.float32)
    g = torch.full((1, 1, 128, 4), -80.0, requires_grad=True)
    o = ae.linear.gla()(q, k, v, g)
    o.sum().backward()
    assert torch.isfinite(o).all() and torch.isfinite(g.grad).all()
    want, _ = recurrent(q, k, v, g.detach(), 4 ** -0.5)
    assert torch.allclose(o.double(), want, atol=1e-5)


@pytest.mark.parametrize("per_channel", [False, True])
def test_zero_gates_and_strong_then_weak_decays(per_channel):
    """A gate at exactly 0 (log-decay -inf) cuts the state; a strong decay followed by weak
    ones keeps the weak ones' precision (segment sums, not differences of prefix sums)."""
    T, Dk = 150, 4
    shape = (1, 2, T, Dk) if per_channel else (1, 2, T)
    a = torch.full(shape, -0.01, dtype=torch.float64)
    a[:, :, 10] = -math.inf
    a[:, :, 70] = -1e4
    q, k, v, _ = inputs(1, 2, T, Dk, 4, "retention")
    lin = ae.compile_linear(decay_mod=(lambda g, b, h, t, d: g) if per_channel else
                            (lambda g, b, h, t: g), per_channel=per_channel)
    want, want_s = recurrent(q, k, v, a, Dk ** -0.5)
    g32 = a.float().requires_grad_(True)
    o, s = lin(q.float(), k.float(), v.float(), g32, output_final_state=True)
    assert torch.isfinite(o).all() and torch.isfinite(s).all()
    assert torch.allclose(o.double(), want, atol=1e-5, rtol=1e-5)
    assert torch.allclose(s.double(), want_s, atol=1e-5, rtol=1e-5)
    (o.sum() + s.sum()).backward()
    assert torch.isfinite(g32.grad).all()


def test_feature_maps_reading_other_dtypes():
    """A mod's result takes the call's accumulation type (an fp64 captured tensor with fp32
    inputs, a Python number with fp64 ones)."""
    w = torch.linspace(0.5, 1.5, 2, dtype=torch.float64)
    q, k, v, _ = inputs(1, 2, 20, 4, 4, "retention", torch.float32)
    o = ae.compile_linear(k_mod=lambda x, b, h, t, d: x * w[h])(q, k, v)
    assert o.dtype == torch.float32 and torch.isfinite(o).all()
    q, k, v, _ = inputs(1, 2, 20, 4, 4, "retention")
    o = ae.compile_linear(v_mod=lambda x, b, h, t, d: 2.0)(q, k, v)
    assert o.dtype == torch.float64


def test_bad_inputs_say_what_is_wrong():
    q, k, v, g = inputs(1, 2, 10, 4, 4, "simple_gla")
    lin = ae.linear.simple_gla()
    with pytest.raises(ValueError, match=r"\[B, H, T, D\]"):
        lin(q[0], k, v, g)
    with pytest.raises(ValueError, match="one shape"):
        lin(q, k[..., :2], v, g)
    with pytest.raises(ValueError, match="g must be a tensor of shape"):
        lin(q, k, v, g[..., :5])
    with pytest.raises(ValueError, match="B must be 1"):
        lin(torch.cat([q, q]), torch.cat([k, k]), torch.cat([v, v]), torch.cat([g, g]),
            cu_seqlens=torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="cu_seqlens must rise"):
        lin(q, k, v, g, cu_seqlens=torch.tensor([0, 6, 4, 10]))
    with pytest.raises(ValueError, match="initial_state must be"):
        lin(q, k, v, g, initial_state=torch.zeros(1, 2, 4, 3))
    with pytest.raises(TypeError, match="decay_mod must take 4"):
        ae.compile_linear(decay_mod=lambda g, b, h: g)
    with pytest.raises(TypeError, match="decay_mod must take 5"):
        ae.compile_linear(decay_mod=lambda g, b, h, t: g, per_channel=True)
    with pytest.raises(TypeError, match="q_mod must take 5 or 6"):
        ae.compile_linear(q_mod=lambda x: x)
    with pytest.raises(ValueError, match="reads g"):
        ae.linear.mamba2(torch.zeros(2))(q, k, v)
    with pytest.raises(TypeError, match="float tensor"):
        lin(q.long(), k, v, g)
    with pytest.raises(ValueError, match="reads g"):
        lin(q, k, v)
    with pytest.raises(TypeError, match="g must be a float tensor"):
        lin(q, k, v, g.long())
    with pytest.raises(ValueError, match="per-channel g"):
        ae.compile_linear(v_mod=lambda x, g, b, h, t, d: x * g, per_channel=True)(
            q, k, v[..., :2], torch.zeros(1, 2, 10, 4, dtype=torch.float64))
    assert math.isfinite(float(lin(q, k, v, g).sum()))


# ---- the linear_forward op, the decode step, and the fused kernels (GPU) ------------------

@pytest.mark.parametrize("per_channel", [False, True], ids=["scalar", "per_channel"])
def test_forward_op_reference_equals_the_python_chunks(per_channel):
    """The op's reference (C++, every device the kernels do not take) against the Python chunks
    its backward recomputes, with an initial state, a tail chunk and chunks of 16; no tokens:
    the initial state comes back."""
    from attention_engine.linear import _reference
    B, H, T, Dk, Dv = 2, 3, 37, 8, 6
    q, k, v = (torch.randn(B, H, T, d, dtype=torch.float64) for d in (Dk, Dk, Dv))
    a = torch.nn.functional.logsigmoid(torch.randn(B, H, T, *([Dk] if per_channel else []),
                                                   dtype=torch.float64))
    s0 = torch.randn(B, H, Dk, Dv, dtype=torch.float64)
    o, state = torch.ops.attention_engine.linear_forward(q, k, v, a, s0, 0.3, True, 16)
    want_o, want_state = _reference(q, k, v, a, s0, 0.3, per_channel, 16)
    torch.testing.assert_close(o, want_o, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state, want_state, rtol=1e-12, atol=1e-12)
    o, state = torch.ops.attention_engine.linear_forward(q[:, :, :0], k[:, :, :0], v[:, :, :0],
                                                         a[:, :, :0], s0, 0.3, True)
    assert o.shape == (B, H, 0, Dv) and torch.equal(state, s0)
    o, state = torch.ops.attention_engine.linear_forward(q, k, v, a, None, 0.3, False)
    assert state.numel() == 0
    with pytest.raises(ValueError, match="log-decays"):
        torch.ops.attention_engine.linear_forward(q, k, v, a[:, :, :5], None, 0.3, False)
    with pytest.raises(ValueError, match="state must be"):
        torch.ops.attention_engine.linear_forward(q, k, v, a, s0[:, :, :2], 0.3, False)
    # packed sequences through the op: B 1, offsets checked and named in the error
    q1, k1, v1, a1 = q[:1], k[:1], v[:1], a[:1]
    cu = torch.tensor([0, 10, 10, T], dtype=torch.int32)
    o1, st1 = torch.ops.attention_engine.linear_forward(q1, k1, v1, a1, None, 0.3, True, 16, cu)
    assert st1.shape == (3, H, Dk, Dv)
    torch.testing.assert_close(o1[:, :, 10:], _reference(q1[:, :, 10:], k1[:, :, 10:], v1[:, :, 10:],
                                                         a1[:, :, 10:], None, 0.3, per_channel)[0])
    with pytest.raises(ValueError, match=r"rise from 0 to T = 37; got 0, 12, 5"):
        torch.ops.attention_engine.linear_forward(q1, k1, v1, a1, None, 0.3, False, 64,
                                                  torch.tensor([0, 12, 5]))
    with pytest.raises(ValueError, match="1-D int32"):
        torch.ops.attention_engine.linear_forward(q1, k1, v1, a1, None, 0.3, False, 64,
                                                  torch.tensor([[0, T]]))


@pytest.mark.parametrize("kind", ["retention", "gla", "mamba2"])
def test_decode_steps_equal_one_call(kind):
    """lin.step token by token (the state updated in place, the position as the mods' t)
    equals one call over the sequence: outputs and the final state."""
    B, H, T, Dk, Dv = 2, 3, 20, 8, 6
    q, k, v, g = inputs(B, H, T, Dk, Dv, kind)
    A_log = torch.randn(H, dtype=torch.float64) if kind == "mamba2" else None
    lin = definition(kind, H, A_log)
    out, final = lin(q, k, v, g, output_final_state=True)
    state = torch.zeros(B, H, Dk, Dv, dtype=torch.float64)
    steps = []
    for t in range(T):
        sl = slice(t, t + 1)
        steps.append(lin.step(q[:, :, sl], k[:, :, sl], v[:, :, sl],
                              None if g is None else g[:, :, sl], state=state, position=t))
    torch.testing.assert_close(torch.cat(steps, 2), out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(state, final, rtol=1e-10, atol=1e-10)


def test_decode_step_positions_reach_the_mods():
    """A feature map reading t sees the step's position (one per batch as a tensor)."""
    lin = ae.compile_linear(q_mod=lambda x, b, h, t, d: x * (1 + t))
    B, H, T, D = 2, 1, 5, 4
    q, k, v = (torch.randn(B, H, T, D, dtype=torch.float64) for _ in range(3))
    out = lin(q, k, v)
    state = torch.zeros(B, H, D, D, dtype=torch.float64)
    for t in range(T):
        o = lin.step(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], state=state,
                     position=torch.full((B,), t))
    torch.testing.assert_close(o, out[:, :, -1:], rtol=1e-10, atol=1e-10)


def test_decode_step_says_what_is_wrong():
    lin = ae.linear.retention(num_heads=2)
    q = torch.randn(1, 2, 1, 8)
    state = torch.zeros(1, 2, 8, 8)
    with pytest.raises(ValueError, match="one token"):
        lin.step(q.expand(1, 2, 2, 8), q.expand(1, 2, 2, 8), q.expand(1, 2, 2, 8), state=state)
    with pytest.raises(ValueError, match="state must be a torch.float32"):
        lin.step(q, q, q, state=state.double())
    with pytest.raises(RuntimeError, match="inference"):
        lin.step(q.requires_grad_(), q, q, state=state)


@pytest.mark.gpu
@pytest.mark.parametrize("dims", [(64, 64), (128, 128), (128, 64)], ids=str)
@pytest.mark.parametrize("kind", ["retention", "simple_gla", "mamba2"])
def test_fused_forward_on_the_gpu(kind, dims):
    """The chunked kernels (bf16) against the float64 recurrence, with an initial state and a
    tail chunk; gradients through the recomputed reference; the decode step's kernel."""
    Dk, Dv = dims
    B, H, T = 2, 4, 300
    q, k, v, g = inputs(B, H, T, Dk, Dv, kind)
    A_log = torch.randn(H, dtype=torch.float64) if kind == "mamba2" else None
    s0 = torch.randn(B, H, Dk, Dv, dtype=torch.float64)
    want, want_state = oracle(kind, H, q, k, v, g, A_log, s0)
    lin = definition(kind, H, None if A_log is None else A_log.float().cuda())
    cu = lambda t: None if t is None else t.cuda()
    qb, kb, vb = (t.to("cuda", torch.bfloat16).requires_grad_() for t in (q, k, v))
    gb = None if g is None else g.float().cuda().requires_grad_()
    s0b = s0.float().cuda().requires_grad_()
    assert not ae._C.linear_backward_reason(qb, vb, False)  # the fused backward takes it
    out, state = lin(qb, kb, vb, gb, initial_state=s0b, output_final_state=True)
    rel = lambda a, b: ((a.double().cpu() - b).norm() / b.norm()).item()
    assert rel(out, want) < 3e-2 and rel(state, want_state) < 2e-2
    # gradients (the fused backward) against float64 autograd of the same definition on the CPU
    dout, dstate = torch.randn_like(want), torch.randn_like(want_state)
    leaves = [qb, kb, vb, s0b] + ([gb] if gb is not None else [])
    got = torch.autograd.grad([out, state], leaves, [dout.to("cuda", torch.bfloat16), dstate.float().cuda()])
    ref_leaves = [t.detach().double().cpu().requires_grad_() for t in leaves]
    ref_lin = definition(kind, H, A_log)
    ref_out, ref_state = ref_lin(*ref_leaves[:3], ref_leaves[4] if gb is not None else None,
                                 initial_state=ref_leaves[3], output_final_state=True)
    want_g = torch.autograd.grad([ref_out, ref_state], ref_leaves, [dout, dstate])
    for name, a, b in zip(["dq", "dk", "dv", "dstate0", "dg"], got, want_g):
        assert rel(a, b) < 5e-2, (name, rel(a, b))
    st = s0.float().cuda()
    o1 = lin.step(qb.detach()[:, :, :1], kb.detach()[:, :, :1], vb.detach()[:, :, :1],
                  None if g is None else g.float().cuda()[:, :, :1], state=st)
    assert rel(o1, want[:, :, :1]) < 3e-2


@pytest.mark.gpu
@pytest.mark.parametrize("dims", [(64, 64), (128, 128), (64, 128)], ids=str)
def test_fused_gla_backward_on_the_gpu(dims):
    """GLA's fused backward (gates per key channel: a gradients' pass of its own) against
    float64 autograd of the same definition on the CPU, on the same bf16-rounded inputs: dq,
    dk, dv, the gates' and the initial state's gradients, with a final state's gradient; a tail
    chunk, gates at 0 (a channel's, a whole token's) and strong decays."""
    Dk, Dv = dims
    B, H, T = 2, 4, 300
    q, k, v, g = inputs(B, H, T, Dk, Dv, "gla")
    g[0, 1, T // 3, 5] = -math.inf
    g[1, 2, T // 2] = -math.inf
    g[1, 3] *= 40  # (down to about exp(-15) a token)
    s0 = torch.randn(B, H, Dk, Dv, dtype=torch.float64)
    lin = ae.linear.gla()
    leaves = [t.to("cuda", torch.bfloat16).requires_grad_() for t in (q, k, v)] + \
        [g.float().cuda().requires_grad_(), s0.float().cuda().requires_grad_()]
    assert not ae._C.linear_backward_reason(leaves[0], leaves[2], True)  # the fused backward
    out, state = lin(*leaves[:4], initial_state=leaves[4], output_final_state=True)
    dout, dstate = torch.randn(B, H, T, Dv, dtype=torch.float64), torch.randn_like(s0)
    got = torch.autograd.grad([out, state], leaves, [dout.to("cuda", torch.bfloat16), dstate.float().cuda()])
    ref = [t.detach().double().cpu().requires_grad_() for t in leaves]
    ref_out, ref_state = lin(*ref[:4], initial_state=ref[4], output_final_state=True)
    want = list(torch.autograd.grad([ref_out, ref_state], ref, [dout, dstate]))
    want[3] = torch.where(g.isneginf(), 0.0, want[3])  # a gate at 0: no gradient
    rel = lambda a, b: ((a.double().cpu() - b).norm() / b.norm()).item()
    assert rel(out, ref_out.detach()) < 3e-2
    for name, a, b in zip(["dq", "dk", "dv", "dg", "dstate0"], got, want):
        assert torch.isfinite(a).all() and rel(a, b) < 5e-2, (name, rel(a, b))


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["simple_gla", "gla"])
def test_fused_packed_sequences_on_the_gpu(kind):
    """Packed sequences in one launch per pass (cu_seqlens; an empty sequence, one shorter than
    a chunk): outputs, states and gradients (the fused backward) against float64 per
    sequence."""
    cu = torch.tensor([0, 70, 70, 100, 400], dtype=torch.int32)
    H, Dk, Dv, T = 2, 64, 64, 400
    q, k, v, g = inputs(1, H, T, Dk, Dv, kind)
    s0 = torch.randn(4, H, Dk, Dv, dtype=torch.float64)
    lin = definition(kind, H)
    want, want_state = lin(q, k, v, g, initial_state=s0, output_final_state=True, cu_seqlens=cu)
    leaves = [t.to("cuda", torch.bfloat16).requires_grad_() for t in (q, k, v)]
    gb = g.float().cuda()
    out, state = lin(*leaves, gb, initial_state=s0.float().cuda(), output_final_state=True,
                     cu_seqlens=cu.cuda())
    rel = lambda a, b: ((a.double().cpu() - b).norm() / b.norm()).item()
    assert rel(out, want) < 3e-2 and rel(state, want_state) < 2e-2
    assert not ae._C.linear_backward_reason(leaves[0], leaves[2], kind == "gla", cu.tolist())
    dout = torch.randn_like(want)
    got = torch.autograd.grad(out, leaves, dout.to("cuda", torch.bfloat16))
    ref = [t.clone().requires_grad_() for t in (q, k, v)]
    want_g = torch.autograd.grad(lin(*ref, g, initial_state=s0, cu_seqlens=cu), ref, dout)
    for a, b in zip(got, want_g):
        assert rel(a, b) < 5e-2


def test_index_tensors_and_retentions_decays_are_made_once():
    """The mods' index tensors and retention's decay table are kept between calls (each was a
    kernel launch per call on a GPU): a second call and calls of other shapes still equal the
    recurrence, and so does a call traced by torch.compile, which leaves no fake tensor in them."""
    from attention_engine import linear as lin_mod
    lin = ae.linear.retention(3)
    for B, T in ((1, 40), (2, 17), (1, 40)):
        q, k, v, _ = inputs(B, 3, T, 8, 8, "retention")
        want, _ = oracle("retention", 3, q, k, v, None)
        torch.testing.assert_close(lin(q, k, v), want, rtol=1e-6, atol=1e-6)
    made = dict(lin_mod._ARANGES)
    assert {n for n, _ in made} >= {1, 2, 3, 17, 40}
    assert lin_mod._arange(40, "cpu") is made[(40, torch.device("cpu"))]
    q, k, v, _ = inputs(1, 3, 23, 8, 8, "retention")  # (a length no eager call made yet)
    want, _ = oracle("retention", 3, q, k, v, None)
    torch._dynamo.reset()
    compiled = torch.compile(ae.linear.retention(3), backend="aot_eager", fullgraph=False)
    torch.testing.assert_close(compiled(q, k, v), want, rtol=1e-6, atol=1e-6)
    from torch._subclasses.fake_tensor import FakeTensor
    assert not any(isinstance(t, FakeTensor) for t in lin_mod._ARANGES.values())
    torch.testing.assert_close(lin(q, k, v), want, rtol=1e-6, atol=1e-6)


def test_index_caches_under_inference_mode_and_fake_tensors():
    """Tensors the caches keep are ordinary ones: made under inference mode they still serve a
    later call that trains (Mamba2's A_log[h] is saved for backward), and a call under
    FakeTensorMode keeps nothing."""
    from attention_engine import linear as lin_mod
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
    lin_mod._ARANGES.clear()
    A_log = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    lin = ae.linear.mamba2(A_log)
    q, k, v, g = inputs(1, 3, 21, 8, 8, "mamba2")
    with torch.inference_mode():
        lin(q, k, v, g)
    lin(q, k, v, g).sum().backward()
    assert A_log.grad is not None and torch.isfinite(A_log.grad).all()
    ret = ae.linear.retention(3)
    with torch.inference_mode():
        ret(q, k, v)
    qs = q.detach().requires_grad_()
    ret(qs, k, v).sum().backward()
    assert qs.grad is not None
    short = [t[:, :, :19] for t in (q, k, v)]
    mode = FakeTensorMode()
    fq, fk, fv = (mode.from_tensor(t) for t in short)
    with mode:
        ret(fq, fk, fv)
    assert not any(isinstance(t, FakeTensor) for t in lin_mod._ARANGES.values())
    assert (19, torch.device("cpu")) not in lin_mod._ARANGES
    want, _ = oracle("retention", 3, q[:, :, :19], k[:, :, :19], v[:, :, :19], None)
    torch.testing.assert_close(ret(q[:, :, :19], k[:, :, :19], v[:, :, :19]), want,
                               rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_decode_step_replays_from_a_cuda_graph():
    """lin.step captured in a CUDA graph (what serving does to a decode step) replays to the
    eager step's output and state, also after eager calls of many other lengths have filled
    the index cache the captured step must not have taken its tensors from."""
    from attention_engine import linear as lin_mod
    lin = ae.linear.retention(4)
    B, H, D = 2, 4, 64
    mk = lambda: torch.randn(B, H, 1, D, device="cuda").to(torch.bfloat16)
    q, k, v = mk(), mk(), mk()
    init = torch.randn(B, H, D, D, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            lin.step(q, k, v, state=init.clone(), position=7)
    torch.cuda.current_stream().wait_stream(side)
    state = init.clone()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = lin.step(q, k, v, state=state, position=7)
    for T in range(2, 2 + lin_mod._MAX_KEPT + 8):  # past the cache's size
        lin_mod._arange(T, q.device)
    for _ in range(2):
        q.copy_(mk()), k.copy_(mk()), v.copy_(mk())
        state.copy_(init)
        graph.replay()
        want_state = init.clone()
        want = lin.step(q, k, v, state=want_state, position=7)
        torch.testing.assert_close(out, want, rtol=0, atol=0)
        torch.testing.assert_close(state, want_state, rtol=0, atol=0)
