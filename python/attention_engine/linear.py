"""Linear attention: a running state instead of a row of scores (RetNet, GLA, Mamba2's SSD).

Each query reads the state built from the keys and values before it:

    S_t = diag(exp(a_t)) S_{t-1} + k_t v_t^T        (S: [D_k, D_v], fp32)
    o_t = scale * q_t^T S_t

with feature maps on q, k, v and a log-decay a_t <= 0 (one per (b, h, t), or one per key
channel for GLA), each written as a small Python function:

    lin = attention_engine.compile_linear(q_mod=..., k_mod=..., v_mod=..., decay_mod=...)
    o = lin(q, k, v, g)                                   # q, k [B, H, T, D_k], v [B, H, T, D_v]
    o, state = lin(q, k, v, g, output_final_state=True)   # state [B, H, D_k, D_v]

- ``q_mod(x, b, h, t, d)`` / ``k_mod`` / ``v_mod``: elementwise, ``x`` the element and the
  indices (``t`` the position in its sequence, ``d`` the channel); a sixth argument first
  after ``x`` receives the per-call input ``g`` at (b, h, t): ``k_mod(x, g, b, h, t, d)``
  (Mamba2 scales B by dt).
- ``decay_mod(g, b, h, t)``: the natural-log decay per (b, h, t), or with
  ``per_channel=True`` ``decay_mod(g, b, h, t, d)`` per key channel. ``g`` is the call's
  ``g`` (None when not given): data-dependent gates (GLA's, Mamba2's dt) come through it.
- Captured tensors (a per-head decay, Mamba2's A) are read as in the mods of
  ``attention_engine.compile``; those that require grad get gradients.
- The index tensors are made once per length and device and shared between calls: a mod
  reads them and must not write them in place.

How it runs: the feature maps and decays in PyTorch (autograd differentiates them), the
recurrence in the ``linear_forward`` op: on NVIDIA GPUs (sm_80 and newer, bf16, D_k and D_v 64
or 128) fused chunked kernels, forward and backward, for scalar and per-channel decays
(csrc/torch/linear.h), elsewhere a chunked reference (fp32 state) whose backward is autograd's.
Decoding: ``lin.step(q, k, v, g, state=...)``, one token against the state, updated in place
(a fused kernel on GPUs).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from . import _C  # noqa: F401  (loads the library that defines the ops)
from ._arity import signature, takes
from .api import call_op

_forward_op = torch.ops.attention_engine.linear_forward
_step_op = torch.ops.attention_engine.linear_step

__all__ = ["LinearAttention", "compile_linear", "retention", "simple_gla", "gla", "mamba2"]


# The mods' index tensors, made once per (length, device): each torch.arange on a GPU is a
# kernel launch, and a short call's host work is most of its time. The mods read them (their
# contract: elementwise functions of the indices), never write them.
_ARANGES: dict = {}
_MAX_KEPT = 256  # (past it, made per call: an entry is never freed, a CUDA graph may read it)


def _made_once(store: dict, key, device, make) -> torch.Tensor:
    """store[key], made by make() on first use. Not kept where the tensor would be special:
    traced (torch.compile, a dispatch mode such as FakeTensorMode) or captured into a CUDA
    graph (its memory the graph's); made outside inference mode, so that a later call with
    autograd may save it."""
    device = torch.device(device)
    if torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() or \
            (device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
        return make()
    got = store.get(key)
    if got is None:
        with torch.inference_mode(False):
            got = make()
        if device.type == "cuda":  # (a later call may run on another stream)
            torch.cuda.current_stream(device).synchronize()
        if len(store) < _MAX_KEPT:
            store[key] = got
    return got


def _arange(n: int, device) -> torch.Tensor:
    return _made_once(_ARANGES, (n, torch.device(device)), device,
                      lambda: torch.arange(n, device=device))


def _arity(fn: Callable, role: str, allowed) -> int:
    if not callable(fn):
        raise TypeError(f"attention_engine: {role} must be callable or None, got "
                        f"{type(fn).__name__}")
    sig = signature(fn)
    if sig is None:
        return allowed[0]
    for n in allowed:
        if takes(sig, n):
            return n
    raise TypeError(f"attention_engine: {role} must take {' or '.join(map(str, allowed))} "
                    f"arguments, but {getattr(fn, '__name__', fn)}{sig} does not")


class LinearAttention:
    """A compiled linear attention (see attention_engine.linear); made by compile_linear.

    ``lin(q, k, v, g=None, *, initial_state=None, output_final_state=False, cu_seqlens=None)``:
    q, k [B, H, T, D_k] and v [B, H, T, D_v] (any float dtype; the state and the sums are fp32,
    fp64 for fp64 inputs); g the mods' per-call input, [B, H, T] ([B, H, T, D_k] with
    per_channel); initial_state [N, H, D_k, D_v] (N sequences); packed sequences with B = 1
    and ``cu_seqlens`` (the state restarts at each, t counts from 0 in each). Returns out
    [B, H, T, D_v] in v's dtype, and the final states [N, H, D_k, D_v] (fp32) when asked.

    Example (decoding one token at a time through the state equals one call):
        >>> import torch, attention_engine as ae
        >>> lin = ae.linear.retention(num_heads=2)
        >>> q = k = v = torch.randn(1, 2, 6, 8)
        >>> out, state = lin(q, k, v, output_final_state=True)
        >>> step, s = lin(q[:, :, :3], k[:, :, :3], v[:, :, :3], output_final_state=True)
        >>> step, s = lin(q[:, :, 3:], k[:, :, 3:], v[:, :, 3:], initial_state=s,
        ...               output_final_state=True)
        >>> torch.allclose(step, out[:, :, 3:], atol=1e-5), torch.allclose(s, state, atol=1e-5)
        (True, True)
    """

    def __init__(self, q_mod=None, k_mod=None, v_mod=None, decay_mod=None, *,
                 per_channel: bool = False, scale: Optional[float] = None,
                 chunk_size: int = 64, name: Optional[str] = None, needs_g: bool = False):
        self._feature = {}
        for role, fn in (("q_mod", q_mod), ("k_mod", k_mod), ("v_mod", v_mod)):
            self._feature[role] = None if fn is None else (fn, _arity(fn, role, (5, 6)))
        if decay_mod is not None:
            _arity(decay_mod, "decay_mod", (5,) if per_channel else (4,))
        if not isinstance(per_channel, bool):
            raise TypeError("attention_engine: per_channel must be True or False")
        if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale)):
            raise TypeError(f"attention_engine: scale must be a finite number or None, got "
                            f"{scale!r}")
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"attention_engine: chunk_size must be a positive int, got "
                             f"{chunk_size!r}")
        self.decay_mod, self.per_channel = decay_mod, per_channel
        self.scale, self.chunk_size, self.name = scale, chunk_size, name
        self.needs_g = needs_g  # the ready definitions whose mods read g say so

    def __repr__(self):
        return f"LinearAttention({self.name or 'custom'})"

    # -- inputs -----------------------------------------------------------------------------

    def _check(self, q, k, v, g, initial_state, cu_seqlens):
        for n, t in (("q", q), ("k", k), ("v", v)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"attention_engine: {n} must be a tensor, got {type(t).__name__}")
            if t.dim() != 4:
                raise ValueError(f"attention_engine: {n} must be [B, H, T, D], got shape "
                                 f"{tuple(t.shape)}")
            if not t.is_floating_point():
                raise TypeError(f"attention_engine: {n} must be a float tensor, got {t.dtype}")
        if q.shape != k.shape:
            raise ValueError(f"attention_engine: q and k must have one shape, got "
                             f"{tuple(q.shape)} and {tuple(k.shape)}")
        if v.shape[:3] != q.shape[:3]:
            raise ValueError(f"attention_engine: v must be [B, H, T, D_v] with q's B, H, T, got "
                             f"{tuple(v.shape)} for q {tuple(q.shape)}")
        if not (q.device == k.device == v.device):
            raise ValueError("attention_engine: q, k and v must be on one device")
        B, H, T, Dk = q.shape
        if g is None and self.needs_g:
            raise ValueError(f"attention_engine: {self!r} reads g (its gates): pass g to the call")
        for n, t in (("g", g), ("initial_state", initial_state)):
            if t is not None and isinstance(t, torch.Tensor):
                if not t.is_floating_point():
                    raise TypeError(f"attention_engine: {n} must be a float tensor, got {t.dtype}")
                if t.device != q.device:
                    raise ValueError(f"attention_engine: {n} must be on q's device {q.device}, "
                                     f"got {t.device}")
        if g is not None:
            want = (B, H, T, Dk) if self.per_channel else (B, H, T)
            if not isinstance(g, torch.Tensor) or tuple(g.shape) != want:
                got = tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
                raise ValueError(f"attention_engine: g must be a tensor of shape {want}, got {got}")
        if cu_seqlens is not None:
            if B != 1:
                raise ValueError("attention_engine: with cu_seqlens, q, k, v are packed: B must "
                                 f"be 1, got {B}")
            if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1 or \
                    cu_seqlens.dtype not in (torch.int32, torch.int64) or cu_seqlens.numel() < 2:
                raise ValueError("attention_engine: cu_seqlens must be a 1-D int32/int64 tensor of "
                                 "at least 2 offsets")
            c = cu_seqlens.tolist()
            if c[0] != 0 or c[-1] != T or any(b < a for a, b in zip(c, c[1:])):
                raise ValueError(f"attention_engine: cu_seqlens must rise from 0 to T = {T}, got {c}")
        n_seq = (cu_seqlens.numel() - 1) if cu_seqlens is not None else B
        if initial_state is not None:
            want = (n_seq, H, Dk, v.shape[-1])
            if not isinstance(initial_state, torch.Tensor) or tuple(initial_state.shape) != want:
                got = (tuple(initial_state.shape) if isinstance(initial_state, torch.Tensor)
                       else type(initial_state).__name__)
                raise ValueError(f"attention_engine: initial_state must be {want}, got {got}")

    # -- the mods on whole tensors ----------------------------------------------------------

    @staticmethod
    def _index(B, H, T, D, device, offset_b=0, offset_t=0):
        """The mods' b, h, t, d. offset_b: the batch's first index, or for packed sequences
        each token's (sequence, position) as a pair of [T] tensors."""
        h = _arange(H, device).view(1, H, 1, 1)
        d = _arange(D, device).view(1, 1, 1, D)
        if isinstance(offset_b, tuple):
            return offset_b[0].view(1, 1, T, 1), h, offset_b[1].view(1, 1, T, 1), d
        b = _arange(B, device).view(B, 1, 1, 1)
        t = _arange(T, device).view(1, 1, T, 1)
        if not (isinstance(offset_b, int) and offset_b == 0):
            b = b + offset_b
        if not (isinstance(offset_t, int) and offset_t == 0):
            t = t + offset_t
        return b, h, t, d

    def _feature_map(self, role, x, g, seq, offset_t=0):
        """The mod of ``role`` on x, computed in acc (fp32, fp64 for fp64 inputs), returned in
        x's dtype; no mod: x itself (a round trip through fp32 would cost three copies)."""
        entry = self._feature[role]
        if entry is None:
            return x
        fn, n = entry
        dtype = x.dtype
        x = x.to(torch.float64 if dtype == torch.float64 else torch.float32)
        B, H, T, D = x.shape
        b, h, t, d = self._index(B, H, T, D, x.device, seq, offset_t)
        if n == 6:
            if g is None:
                raise ValueError(f"attention_engine: {role} reads g: pass g to the call")
            gx = g if g.dim() == 4 else g.unsqueeze(-1)
            if gx.shape[-1] not in (1, D):
                raise ValueError(f"attention_engine: {role} reads a per-channel g of {gx.shape[-1]} "
                                 f"channels but its input has {D}")
            out = fn(x, gx, b, h, t, d)
        else:
            out = fn(x, b, h, t, d)
        return torch.as_tensor(out, device=x.device).to(x.dtype).expand(x.shape).to(dtype)

    def _log_decay(self, g, B, H, T, Dk, device, seq, offset_t=0):
        """[B, H, T] (or [B, H, T, Dk]) natural-log decays, fp32 or wider."""
        if self.decay_mod is None:
            shape = (B, H, T, Dk) if self.per_channel else (B, H, T)
            return torch.zeros(shape, device=device)
        if self.per_channel:
            b, h, t, d = self._index(B, H, T, Dk, device, seq, offset_t)
            a = self.decay_mod(g, b, h, t, d)
            return torch.as_tensor(a, device=device).expand(B, H, T, Dk)
        b, h, t, _ = self._index(B, H, T, 1, device, seq, offset_t)
        a = self.decay_mod(g, b[..., 0], h[..., 0], t[..., 0])
        return torch.as_tensor(a, device=device).expand(B, H, T)

    # -- the call ---------------------------------------------------------------------------

    def __call__(self, q, k, v, g=None, *, initial_state=None, output_final_state=False,
                 cu_seqlens=None):
        self._check(q, k, v, g, initial_state, cu_seqlens)
        where, cu = 0, None
        if cu_seqlens is not None:  # each token's sequence and position in it, for the mods
            cu = cu_seqlens.to(q.device, torch.long)
            seq = torch.repeat_interleave(torch.arange(cu.numel() - 1, device=q.device), cu.diff())
            where = (seq, torch.arange(q.shape[2], device=q.device) - cu[seq])
        return self._run(q, k, v, g, initial_state, output_final_state, where, cu)

    def _inputs(self, q, k, v, g, seq, offset_t=0):
        """The feature-mapped q, k, v (in the inputs' dtype, as the op takes them; fp32 or fp64
        math) and the log-decays (fp32, fp64 for fp64 inputs)."""
        B, H, T, Dk = q.shape
        acc = torch.float64 if q.dtype == torch.float64 else torch.float32
        gq = None if g is None else g.to(acc)
        feats = [self._feature_map(role, x, gq, seq, offset_t)
                 for role, x in (("q_mod", q), ("k_mod", k), ("v_mod", v))]
        a = self._log_decay(gq, B, H, T, Dk, q.device, seq, offset_t).to(acc)
        return (*feats, a)

    def _run(self, q, k, v, g, initial_state, output_final_state, where, cu_seqlens=None):
        Dk = q.shape[-1]
        scale = Dk ** -0.5 if self.scale is None else self.scale
        qf, kf, vf, a = self._inputs(q, k, v, g, where)
        state0 = None if initial_state is None else initial_state.to(a.dtype)
        o, state = call_op(_forward_op, qf, kf, vf, a.contiguous(), state0, float(scale),
                           output_final_state, self.chunk_size, cu_seqlens)
        return (o, state) if output_final_state else o

    def step(self, q, k, v, g=None, *, state, position=0):
        """One decoding step: the token q, k [B, H, 1, D_k], v [B, H, 1, D_v] (g [B, H, 1], or
        [B, H, 1, D_k] per channel) against ``state`` [B, H, D_k, D_v] (float32; float64 for
        float64 inputs), which becomes the state after it, in place. ``position``: the token's
        index in its sequence (an int, or one per batch), as the mods' ``t``. Returns o
        [B, H, 1, D_v]. Inference only (no autograd); a fused kernel on GPUs.

        Example:
            >>> import torch, attention_engine as ae
            >>> lin = ae.linear.retention(num_heads=2)
            >>> q = k = v = torch.randn(1, 2, 5, 8)
            >>> out, final = lin(q, k, v, output_final_state=True)
            >>> state = torch.zeros(1, 2, 8, 8)
            >>> steps = [lin.step(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1],
            ...                   state=state, position=t) for t in range(5)]
            >>> torch.allclose(torch.cat(steps, 2), out, atol=1e-5), torch.allclose(state, final, atol=1e-5)
            (True, True)"""
        self._check(q, k, v, g, None, None)
        B, H, T, Dk = q.shape
        if T != 1:
            raise ValueError(f"attention_engine: step takes one token (T = 1), got T = {T}")
        acc = torch.float64 if q.dtype == torch.float64 else torch.float32
        want = (B, H, Dk, v.shape[-1])
        if not isinstance(state, torch.Tensor) or tuple(state.shape) != want or \
                state.dtype != acc or state.device != q.device:
            got = (f"{tuple(state.shape)} {state.dtype} on {state.device}"
                   if isinstance(state, torch.Tensor) else type(state).__name__)
            raise ValueError(f"attention_engine: step's state must be a {acc} tensor of shape "
                             f"{want} on {q.device}, got {got}")
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                           for t in (q, k, v, g, state)):
            raise RuntimeError("attention_engine: step is for inference (it updates the state in "
                               "place); call the attention on the sequence to train")
        if isinstance(position, torch.Tensor):
            position = position.to(q.device).view(-1, 1, 1, 1)
        scale = Dk ** -0.5 if self.scale is None else self.scale
        with torch.no_grad():
            qf, kf, vf, a = self._inputs(q, k, v, g, 0, position)
            return call_op(_step_op, qf, kf, vf, a.contiguous(), state, float(scale))


def _segment_sums(a, dim):
    """seg[..., i, j, ...] = sum of a over (j, i] along `dim` (0 on the diagonal), -inf where
    j > i: built by cumulative sums of masked copies, never as a difference of two prefix sums
    (a -inf decay would make that nan, and a strong one would round away the weak ones
    after it)."""
    n = a.shape[dim]
    x = a.unsqueeze(dim + 1).expand(*a.shape[:dim + 1], n, *a.shape[dim + 1:])  # x[i, j] = a_i
    shape = [1] * x.dim()
    shape[dim], shape[dim + 1] = n, n
    ones = torch.ones(n, n, dtype=torch.bool, device=a.device)
    below = ones.tril(-1).view(shape)
    seg = torch.cumsum(torch.where(below, x, torch.zeros((), dtype=a.dtype, device=a.device)),
                       dim=dim)
    return torch.where(ones.tril().view(shape), seg, float("-inf"))


def _suffix_sums(a, dim):
    """sum of a over the positions after each one along `dim` (exclusive), by a flipped
    cumulative sum (no subtraction)."""
    rev = torch.cumsum(torch.flip(a, [dim]), dim=dim)
    zero = torch.zeros_like(rev.narrow(dim, 0, 1))
    return torch.flip(torch.cat([zero, rev.narrow(dim, 0, rev.shape[dim] - 1)], dim=dim), [dim])


def _chunk(q, k, v, a, state, per_channel):
    """One chunk: o = q (decayed state) + the causal intra-chunk product under the decays; the
    state carried to the chunk's end. Every decay factor is exp of a sum of log-decays (<= 0),
    never of a difference: -inf decays (a gate at 0) and strong ones stay exact."""
    A = torch.cumsum(a, dim=2)  # log decay from the chunk's start, inclusive
    end = _suffix_sums(a, 2)    # log decay from each position to the chunk's end
    seg = _segment_sums(a, 2)   # [B, H, i, j] (per channel: [B, H, i, j, Dk])
    if per_channel:
        # from the state: q_i * exp(A_i); intra: sum_d q_id k_jd exp(seg_ijd), j <= i
        o_state = (q * torch.exp(A)) @ state
        scores = (q[:, :, :, None, :] * k[:, :, None, :, :] * torch.exp(seg)).sum(-1)
        new_state = torch.exp(A[:, :, -1, :])[..., None] * state + \
            (k * torch.exp(end)).transpose(-1, -2) @ v
    else:
        o_state = torch.exp(A)[..., None] * (q @ state)
        scores = (q @ k.transpose(-1, -2)) * torch.exp(seg)
        new_state = torch.exp(A[:, :, -1])[..., None, None] * state + \
            (k * torch.exp(end)[..., None]).transpose(-1, -2) @ v
    return o_state + scores @ v, new_state


def _reference(q, k, v, a, state, scale, per_channel, chunk=64):
    """The chunked recurrence in PyTorch (differentiable; the op's backward recomputes it):
    feature-mapped q, k, v, the log-decays a, the initial state (or None) -> (o, final state),
    in a's dtype."""
    B, H, T, Dk = q.shape
    acc = a.dtype
    qf, kf, vf = q.to(acc) * scale, k.to(acc), v.to(acc)
    if state is None:
        state = torch.zeros(B, H, Dk, v.shape[-1], device=q.device, dtype=acc)
    outs = []
    for s in range(0, T, chunk):
        e = min(T, s + chunk)
        o_c, state = _chunk(qf[:, :, s:e], kf[:, :, s:e], vf[:, :, s:e], a[:, :, s:e],
                            state.to(acc), per_channel)
        outs.append(o_c)
    o = torch.cat(outs, dim=2) if outs else qf.new_zeros(B, H, 0, v.shape[-1])
    return o.to(v.dtype), state


def _forward_setup(ctx, inputs, output):
    q, k, v, a, state0, scale, output_state, *rest = inputs
    ctx.has_state0 = state0 is not None
    ctx.save_for_backward(q, k, v, a, *([state0] if state0 is not None else []))
    ctx.scale, ctx.output_state = scale, output_state
    ctx.chunk = rest[0] if rest else 64
    ctx.cu = rest[1] if len(rest) > 1 else None
    # (the offsets as numbers, read here: under torch.compile the backward's are fake tensors)
    ctx.offsets = ctx.cu.tolist() if ctx.cu is not None and not torch.compiler.is_compiling() else None


def _reference_packed(q, k, v, a, state, scale, per_channel, chunk, c):
    """_reference per packed sequence (c: the offsets as a list; None: dense), the states one
    per sequence."""
    if c is None:
        return _reference(q, k, v, a, state, scale, per_channel, chunk)
    outs, states = [], []
    for i, (s, e) in enumerate(zip(c, c[1:])):
        o, st = _reference(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], a[:, :, s:e],
                           None if state is None else state[i:i + 1], scale, per_channel, chunk)
        outs.append(o)
        states.append(st)
    return torch.cat(outs, 2), torch.cat(states, 0)


def _forward_backward(ctx, do, dstate):
    """The fused backward where its kernels take the inputs (CUDA, bf16, head dims 64 / 128,
    the shared memory its gradients' pass needs), else the chunked reference recomputed under
    autograd."""
    q, k, v, a, *rest = ctx.saved_tensors
    state0 = rest[0] if ctx.has_state0 else None
    inputs = [q, k, v, a] + ([state0] if state0 is not None else [])
    needs = ctx.needs_input_grad
    # (Under torch.compile the reference's ops are traced: the kernels' choice reads sizes.)
    if q.is_cuda and not torch.compiler.is_compiling() and \
            not _C.linear_backward_reason(q, v, a.dim() == 4, ctx.offsets or []):
        if do is None:
            do = torch.zeros(v.shape, device=v.device, dtype=v.dtype)
        ds = dstate if ctx.output_state and dstate is not None and dstate.numel() else None
        # (create_graph: grad on, through the wrapper, whose backward raises)
        dq, dk, dv, da, ds0 = call_op(
            torch.ops.attention_engine.linear_backward, q, k, v, a, state0, do, ds, ctx.scale,
            state0 is not None and bool(needs[4]), ctx.cu)
        grads = [dq, dk, dv, da.to(a.dtype)] + ([ds0.to(state0.dtype)] if state0 is not None else [None])
        return (*[g if need else None for g, need in zip(grads, needs[:5])], None, None) + \
            (None,) * (len(needs) - 7)
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(bool(needs[i])) for i, t in enumerate(inputs)]
        o, state = _reference_packed(*leaves[:4], leaves[4] if state0 is not None else None,
                                     ctx.scale, a.dim() == 4, ctx.chunk, ctx.offsets)
        outs, grads = [o], [do]
        if ctx.output_state and dstate is not None and dstate.numel():
            outs.append(state)
            grads.append(dstate)
        wanted = [t for t in leaves if t.requires_grad]
        got = iter(torch.autograd.grad(outs, wanted, grads, allow_unused=True) if wanted else ())
    result = [next(got) if t.requires_grad else None for t in leaves]
    if state0 is None:
        result.append(None)
    return (*result, None, None) + (None,) * (len(needs) - 7)


torch.library.register_autograd("attention_engine::linear_forward", _forward_backward,
                                setup_context=_forward_setup)


def _no_double_backward(ctx, *grads):
    raise RuntimeError("attention_engine: gradients of linear attention's gradients (double "
                       "backward) are not supported")


def _nothing_to_save(ctx, inputs, output):
    pass


# The fused backward's op: differentiating its results raises (else they would be constants).
torch.library.register_autograd("attention_engine::linear_backward", _no_double_backward,
                                setup_context=_nothing_to_save)


def compile_linear(q_mod: Optional[Callable] = None, k_mod: Optional[Callable] = None,
                   v_mod: Optional[Callable] = None, decay_mod: Optional[Callable] = None, *,
                   per_channel: bool = False, scale: Optional[float] = None,
                   chunk_size: int = 64) -> LinearAttention:
    """A linear attention from its feature maps and log-decay (see attention_engine.linear).

    Example (RetNet's retention: a per-head decay 1 - 2^(-5 - h)):
        >>> import torch, attention_engine as ae
        >>> gamma = 1 - 2.0 ** (-5 - torch.arange(4.0))
        >>> lin = ae.compile_linear(decay_mod=lambda g, b, h, t: torch.log(gamma[h]))
        >>> q = k = v = torch.randn(1, 4, 10, 16)
        >>> o, state = lin(q, k, v, output_final_state=True)
        >>> o.shape, state.shape
        (torch.Size([1, 4, 10, 16]), torch.Size([1, 4, 16, 16]))
    """
    return LinearAttention(q_mod, k_mod, v_mod, decay_mod, per_channel=per_channel,
                           scale=scale, chunk_size=chunk_size)


# ---- ready definitions -------------------------------------------------------------------

def retention(num_heads: int) -> LinearAttention:
    """RetNet's retention: decay gamma_h = 1 - 2^(-5 - h) per head, scale D_k^-0.5 (as
    flash-linear-attention's chunk_retention).

    Example:
        >>> import torch, attention_engine as ae
        >>> q = k = v = torch.randn(2, 4, 100, 32)
        >>> ae.linear.retention(num_heads=4)(q, k, v).shape
        torch.Size([2, 4, 100, 32])
    """
    # From the head index on its own device (a table on the host would be a host-to-device copy
    # per call, which stalls the host), float64, cast to the call's accumulation type; kept per
    # (device, heads): it is a constant, and its four small kernels were host time per call.
    made = {}

    def decay(g, b, h, t):
        return _made_once(made, (h.device, tuple(h.shape)), h.device,
                          lambda: torch.log1p(-torch.exp2(-5.0 - h.double())))
    lin = LinearAttention(decay_mod=decay)
    lin.name = "retention"
    return lin


def simple_gla() -> LinearAttention:
    """Simple GLA: a data-dependent scalar gate per (b, h, t); g holds its log (<= 0, e.g.
    logsigmoid of a projection), as flash-linear-attention's chunk_simple_gla.

    Example:
        >>> import torch, attention_engine as ae
        >>> q = k = v = torch.randn(1, 2, 50, 16)
        >>> g = torch.nn.functional.logsigmoid(torch.randn(1, 2, 50))
        >>> ae.linear.simple_gla()(q, k, v, g).shape
        torch.Size([1, 2, 50, 16])
    """
    lin = LinearAttention(decay_mod=lambda g, b, h, t: g, needs_g=True)
    lin.name = "simple_gla"
    return lin


def gla() -> LinearAttention:
    """GLA: data-dependent gates per key channel; g [B, H, T, D_k] holds their logs, as
    flash-linear-attention's chunk_gla.

    Example:
        >>> import torch, attention_engine as ae
        >>> q = k = v = torch.randn(1, 2, 50, 16)
        >>> g = torch.nn.functional.logsigmoid(torch.randn(1, 2, 50, 16)) / 16
        >>> ae.linear.gla()(q, k, v, g).shape
        torch.Size([1, 2, 50, 16])
    """
    lin = LinearAttention(decay_mod=lambda g, b, h, t, d: g, per_channel=True, needs_g=True)
    lin.name = "gla"
    return lin


def mamba2(A_log: torch.Tensor) -> LinearAttention:
    """Mamba2's SSD (the scan without the D skip and the gate): q = C, k = B, v = x, per
    head A = -exp(A_log) (learnable: pass a tensor that requires grad), g = dt (after
    softplus, > 0): state decay exp(dt A), input B * dt, scale 1.

    Example (A gets its gradient):
        >>> import torch, attention_engine as ae
        >>> A_log = torch.zeros(4, requires_grad=True)
        >>> C, B, x = torch.randn(1, 4, 64, 16), torch.randn(1, 4, 64, 16), torch.randn(1, 4, 64, 8)
        >>> dt = torch.nn.functional.softplus(torch.randn(1, 4, 64))
        >>> ae.linear.mamba2(A_log)(C, B, x, dt).sum().backward()
        >>> A_log.grad.shape
        torch.Size([4])
    """
    lin = LinearAttention(k_mod=lambda x, g, b, h, t, d: x * g,
                          decay_mod=lambda g, b, h, t: g * -torch.exp(A_log[h]), scale=1.0,
                          needs_g=True)
    lin.name = "mamba2"
    return lin
