"""DDP and FSDP2 training of a model holding ae.Attention modules with learnable captured
tensors (issue 24): 2 CPU processes (gloo), each on its own half of the batch, take a few
optimizer steps; every parameter, the relative-bias table and the ALiBi slopes included, must
then equal a single-process run on the whole batch (the same averaged gradients), in float64.
Also a compiled variant (``ae.compile``) held by a plain nn.Module under DDP."""
import datetime

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import attention_engine as ae

WORLD, B, S, E, H, D, MAXD = 2, 4, 16, 16, 2, 8, 4
STEPS, LR = 3, 0.1
TOL = dict(rtol=1e-10, atol=1e-12)


class Block(torch.nn.Module):
    """Attention with a learnable relative-bias table (ae.Attention) and a second one with
    learnable ALiBi slopes, projections around them."""

    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(E, 3 * H * D)
        table = torch.nn.Parameter(0.1 * torch.randn(H, 2 * MAXD + 1))
        self.attn = ae.Attention(ae.mods.relative_bias(table, MAXD), ae.mods.causal)
        slopes = torch.nn.Parameter(ae.mods.alibi_slopes(H).double())
        self.alibi = ae.Attention(ae.mods.alibi(slopes), ae.mods.causal)
        self.proj = torch.nn.Linear(H * D, E)

    def forward(self, x):
        q, k, v = self.qkv(x).view(x.shape[0], S, 3, H, D).permute(2, 0, 3, 1, 4)
        o = self.attn(q, k, v) + self.alibi(q, k, v)
        return x + self.proj(o.transpose(1, 2).reshape(x.shape[0], S, H * D))


class Model(torch.nn.Module):
    """Two Blocks, then an attention with fixed ALiBi slopes and a bias table that the model
    itself registers: shared with an ae.Attention (a tied parameter and a buffer, top="tied")
    or captured by a compiled variant, which is not a module (top="compiled": under DDP only,
    see _fsdp2)."""

    def __init__(self, top):
        super().__init__()
        self.blocks = torch.nn.ModuleList([Block(), Block()])
        self.table = torch.nn.Parameter(0.1 * torch.randn(H, 2 * MAXD + 1))
        biased = ae.mods.relative_bias(self.table, MAXD)
        fixed = ae.mods.alibi(ae.mods.alibi_slopes(H).double())  # a buffer of ae.Attention

        def mod(score, b, h, q_idx, kv_idx):
            return biased(fixed(score, b, h, q_idx, kv_idx), b, h, q_idx, kv_idx)
        self.top = ae.Attention(mod) if top == "tied" else ae.compile(mod)
        self.head = torch.nn.Linear(E, 1)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        q = x.view(x.shape[0], S, H, E // H).transpose(1, 2)
        x = x + self.top(q, q, q).transpose(1, 2).reshape(x.shape)
        return self.head(x).squeeze(-1)


def _make(top):
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return Model(top)
    finally:
        torch.set_default_dtype(default)


def _batches():
    """STEPS batches of B sequences (inputs, targets), the same in every process."""
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(B, S, E, dtype=torch.float64, generator=g),
             torch.randn(B, S, dtype=torch.float64, generator=g)) for _ in range(STEPS)]


def _train(model, batches, rank=0, world=1):
    """STEPS SGD steps, this rank on its slice of every batch; the loss is a mean over the
    slice, so averaging the ranks' gradients gives the whole batch's."""
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    n = B // world
    for x, y in batches:
        loss = torch.nn.functional.mse_loss(model(x[rank * n:(rank + 1) * n]),
                                            y[rank * n:(rank + 1) * n])
        opt.zero_grad()
        loss.backward()
        opt.step()


def _reference(top):
    model = _make(top)
    _train(model, _batches())
    return model


def _check(params, ref, what, rank):
    expect = dict(ref.named_parameters())
    # The captured tensors are among them: blocks.i.attn.table, blocks.i.alibi.slopes, table.
    assert set(params) == set(expect), (what, sorted(params), sorted(expect))
    initial = dict(_make("tied").named_parameters())
    for name, p in params.items():
        torch.testing.assert_close(p, expect[name].detach(), **TOL,
                                   msg=lambda m: f"{what}, rank {rank}: {name}: {m}")
        assert not torch.equal(p, initial[name]), (what, name, "did not train")


def _ddp(rank, world, top):
    from torch.nn.parallel import DistributedDataParallel as DDP
    model = DDP(_make(top))
    _train(model, _batches(), rank, world)
    return {name.removeprefix("module."): p.detach() for name, p in model.named_parameters()}


def _fsdp2(rank, world, top):
    """Each Block its own FSDP group, the rest (the tied table, the head) the root's. A
    compiled variant inside a module is not for FSDP2: fully_shard replaces the module's
    parameters, and the variant would keep reading the tensor it captured (ae.Attention reads
    the ones registered at each call)."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor
    model = _make(top)
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    params = dict(model.named_parameters())
    assert all(isinstance(p, DTensor) for p in params.values())
    (tied,) = model.top.parameters()
    assert tied is model.table and len(list(model.top.buffers())) == 1
    assert params["blocks.0.attn.table"].to_local().shape == (H // world, 2 * MAXD + 1)
    _train(model, _batches(), rank, world)
    return {name: p.full_tensor().detach() for name, p in model.named_parameters()}


def _worker(rank, world, init_file, cases):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=120))
    try:
        ref = _reference("tied")  # the same model as "compiled", the same parameter names
        for how, top in cases:
            params = {"ddp": _ddp, "fsdp2": _fsdp2}[how](rank, world, top)
            _check(params, ref, f"{how}, {top}", rank)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_and_fsdp2_equal_one_process(tmp_path):
    # One group of 2 processes for both (a process's start costs more than its steps).
    # A failing rank's traceback is raised here; the other rank is stopped.
    cases = (("ddp", "compiled"), ("ddp", "tied"), ("fsdp2", "tied"))
    mp.spawn(_worker, args=(WORLD, str(tmp_path / "init"), cases), nprocs=WORLD, join=True)


def test_a_learnable_tensor_that_is_not_a_parameter_warns():
    """It would be a buffer: no optimizer over parameters(), DDP or FSDP would see it."""
    slopes = ae.mods.alibi_slopes(H).requires_grad_()
    with pytest.warns(UserWarning, match="'slopes' requires grad but is not an nn.Parameter"):
        module = ae.Attention(ae.mods.alibi(slopes), ae.mods.causal)
    assert [name for name, _ in module.named_buffers()] == ["slopes"]
    assert list(module.parameters()) == []
