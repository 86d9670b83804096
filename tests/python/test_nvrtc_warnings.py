"""CI's check that generated kernel code compiles without warnings (issue 15, defect 2): a
warning in generated code (a narrowed constant, a statement swallowed by a comment, a
missing return) is a kernel that may compute something else. Every instantiation of the
compile-all check is checked there (tests/python/test_compile_all.py's
`_compiles_without_spills` fails on a warning in the generated code or from ptxas); here, a
variant that exercises every codegen path is compiled with NVRTC for sm_80 and sm_90a, and
the template headers themselves are checked."""
import pytest
import torch

import attention_engine as ae
from attention_engine import _C
from test_compile_all import VARIANTS, _nvrtc_available, _source, warning_lines

pytestmark = pytest.mark.skipif(not _nvrtc_available(), reason="NVRTC not available")


def warnings_of(info, arch, templates=False):
    """The warning lines of one compile, in generated code and ptxas's (templates=False) or in
    the template headers (templates=True)."""
    (report,) = _C.jit_check_arches(info["source"], info["entry"], arches=[arch],
                                    options=info["options"])
    assert report["ok"], f"{info['describe']} {arch}: {report['error']}"
    return warning_lines(report["log"], templates)


def instantiation(case):
    name, kind, (d_qk, d_v), *rest = case
    bf16 = rest[0] if rest else True
    attn = VARIANTS[name]()
    grads = [t.requires_grad for t in attn.buffers] if kind.startswith("bwd") else []
    info = _source(attn, kind, d_qk, d_v, bf16, grads)
    return info, ["sm_90a"] if kind.endswith("90") else ["sm_80", "sm_90a"]


def test_template_headers_compile_without_warnings():
    found = []
    for case in [("plain", "fwd", (128, 128)), ("plain", "bwd", (128, 128)),
                 ("plain", "fwd90", (128, 128)), ("alibi", "bwd", (64, 64)),
                 ("plain", "bwd90", (128, 128))]:
        info, arches = instantiation(case)
        found += [f"{info['describe']} {arch}: {w}" for arch in arches
                  for w in warnings_of(info, arch, templates=True)]
    assert found == []


def every_path():
    """One variant with every op, constant kind and captured dtype the code generator emits."""
    f32 = torch.randn(4, requires_grad=True)
    f16, i64 = torch.randn(4).half(), torch.arange(4)
    i8, u8, flags = torch.arange(4, dtype=torch.int8), torch.arange(4, dtype=torch.uint8), \
        torch.tensor([True, False, True, False])

    def score(s, b, h, q, k):
        d = q - k
        x = s * f32[h] + f16[h] - torch.where(flags[h], 0.5, -0.5) + (i64[h] + i8[h] + u8[h])
        x = x + torch.exp(s) * 1e-3 + torch.log(torch.abs(s) + 1) + torch.sqrt(s * s + 1)
        x = x + torch.floor(s) + torch.ceil(s) + torch.round(s) + torch.trunc(s) + torch.sign(s)
        x = x + torch.tanh(s) + torch.sigmoid(s) + torch.sin(s) * torch.cos(s) + torch.exp2(s)
        x = x + torch.log2(s * s + 1) + torch.rsqrt(s * s + 1) + s ** 2 + 2.0 ** s + s % 1.5
        x = x + s // 0.5 + torch.relu(s) + torch.maximum(s, x) + torch.minimum(s, x) / 3.0
        x = x + (d // 3 + d % 5 + abs(d) + (d & 7) + (d | 1) + (d ^ 2) + (~d)) * 0.01
        x = x + torch.clamp(d, -2147483648, 2147483647) * 1e-9
        x = x + torch.where(d > 10 ** 9, float("inf"), 0.0) + torch.where(d < -10 ** 9, float("nan"), 0.0)
        return torch.where((x != x) | (d > 100), -float("inf"), x)

    def mask(b, h, q, k):
        return ((q >= k) & ~(k > q + 64)) | ((i64[q % 4] == 2) ^ flags[k % 4])
    return ae.compile(score, mask)


@pytest.mark.parametrize("kind", ["fwd", "bwd", "fwd90", "bwd90"])
def test_every_codegen_path_compiles_without_warnings(kind):
    attn = every_path()
    grads = [t.requires_grad for t in attn.buffers] if kind.startswith("bwd") else []
    info = _source(attn, kind, 64, 64, True, grads)
    arch = "sm_90a" if kind.endswith("90") else "sm_80"
    assert warnings_of(info, arch) == [], info["describe"]
