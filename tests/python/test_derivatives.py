"""Derivatives agree with PyTorch's autograd where it defines a convention (issue 15, defect 5):
remainder passes the gradient to its dividend, ties of maximum / minimum split it, clamp's
bounds are inclusive, and a zero base of ** gives 0 where PyTorch gives 0 (not nan)."""
import pytest
import torch

from conftest import check_variant

F64 = torch.float64


def scalar(value):
    return torch.tensor(value, dtype=F64, requires_grad=True)


def test_float_remainder_gradients():
    w = scalar(0.7)
    check_variant(score_mod=lambda s, b, h, q, k: s % 0.7 + torch.remainder(s, w) * 0.5,
                  grads_of=(w,))


def test_float_remainder_by_a_traced_value():
    check_variant(score_mod=lambda s, b, h, q, k: s + torch.remainder(q * 1.0, s.abs() + 0.5))


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_ties_split_the_gradient(op):
    # s * 0 is zero everywhere (not folded: inf * 0 is nan), w is 0: a tie at every score.
    # (Times a distance: under softmax a bias that is the same for a whole row has no gradient.)
    w, u = scalar(0.0), scalar(0.0)
    f = getattr(torch, op)
    check_variant(score_mod=lambda s, b, h, q, k: s + (f(s * 0.0, w) + f(u, w) * 2.0) * (q - k),
                  grads_of=(w, u))


def test_clamp_bounds_are_inclusive_as_in_pytorch():
    lo, hi = scalar(0.0), scalar(0.0)
    # At x == bound, torch.clamp passes the gradient to x, none to the bound.
    check_variant(score_mod=lambda s, b, h, q, k: s + (torch.clamp(s * 0.0, min=lo) +
                  torch.clamp(s * 0.0, max=hi)) * (q - k) + torch.clamp(s, -0.2, 0.3),
                  grads_of=(lo, hi))


@pytest.mark.parametrize("name", ["exponent", "zero exponent", "scalar exponent"])
def test_zero_base_of_pow(name):
    e = scalar(2.0 if name == "exponent" else 0.0)
    mods = {
        # d/de of relu(s)**e at relu(s) == 0: PyTorch gives 0 (0 * log 0 would be nan)
        "exponent": lambda s, b, h, q, k: s + torch.relu(s) ** e,
        # d/dx of x**0 at x == 0: PyTorch gives 0 (0 * 0**-1 would be nan)
        "zero exponent": lambda s, b, h, q, k: s + torch.relu(s) ** e,
        "scalar exponent": lambda s, b, h, q, k: s + torch.relu(s) ** 2.0 + torch.relu(s) ** 1.0,
    }
    check_variant(score_mod=mods[name], grads_of=(e,) if name != "scalar exponent" else ())


def test_zero_base_with_a_learnable_base():
    base = torch.tensor([0.0, 0.5, 0.0, 2.0], dtype=F64, requires_grad=True)
    check_variant(score_mod=lambda s, b, h, q, k: s * base[h] ** 2.0 + base[h] ** (1.0 + torch.sigmoid(s)),
                  grads_of=(base,))
