"""One explicit Runge-Kutta step read from a Butcher tableau (odex/ode/tableau.py), the stepper of
both odex loops:

    k_i = f(t0 + c_i h, y0 + h sum_{j<i} a_ij k_j),     y1 - y0 = h sum_i b_i k_i.

`Slopes` (fewest operations, the fixed grid) or `StackedSlopes` (torchdiffeq's layout, so the
adaptive loop's steps are torchdiffeq's to the last bits). Design notes: docs/design-notes.md.
"""
from __future__ import annotations

import torch


class Slopes:
    """k_1, ..., k_i as a list; weights are the tableau's Python floats."""

    def __init__(self, f0: torch.Tensor, stages: int):
        self.k = [f0]

    def append(self, f: torch.Tensor) -> None:
        self.k.append(f)

    def total(self, weights, dt) -> torch.Tensor | None:
        """h sum_j w_j k_j (None when every weight is zero)."""
        total = None
        for w, kj in zip(weights, self.k):
            if w == 0:
                continue
            total = kj * w if total is None else torch.add(total, kj, alpha=w)
        return None if total is None else dt * total

    def combine(self, weights, y0: torch.Tensor, dt) -> torch.Tensor:
        """y0 + h sum_j w_j k_j."""
        total = self.total(weights, dt)
        return y0 if total is None else y0 + total

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.k[i]


class _Written(torch.autograd.Function):
    """scratch[index] = value without bumping scratch's version counter: each stage's column is
    written once, before any sum reads it, so autograd's in-place check would be a false alarm."""

    @staticmethod
    def forward(ctx, scratch, value, index):
        ctx.index = index
        scratch.data[index] = value
        return scratch

    @staticmethod
    def backward(ctx, grad):
        return grad, grad[ctx.index], None


class StackedSlopes(Slopes):
    """k_1, ..., k_s along the last dimension of one tensor; weights are tensors on its device."""

    def __init__(self, f0: torch.Tensor, stages: int):
        k = torch.empty(*f0.shape, stages, dtype=f0.dtype, device=f0.device)
        self.k, self.n = _Written.apply(k, f0, (..., 0)), 1

    def append(self, f: torch.Tensor) -> None:
        self.k = _Written.apply(self.k, f, (..., self.n))
        self.n += 1

    def total(self, weights: torch.Tensor, dt) -> torch.Tensor:
        return torch.sum(self.k[..., :len(weights)] * (weights * dt), dim=-1)

    def combine(self, weights: torch.Tensor, y0: torch.Tensor, dt) -> torch.Tensor:
        return y0 + self.total(weights, dt).view_as(y0)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.k[..., i]


def stages(func, c: tuple[float, ...], rows, t0: torch.Tensor, dt: torch.Tensor, t1: torch.Tensor,
           y0: torch.Tensor, slopes: Slopes, perturb_end: bool = False) -> torch.Tensor:
    """The slopes k_2, ..., k_s of one step from (t0, y0) (nodes `c`, `rows` the rows 2..s of a),
    appended to `slopes` (which holds k_1 = f(t0, y0)); returns the last stage's state (y1 itself
    for a "first same as last" tableau)."""
    yi = y0
    for ci, row in zip(c[1:], rows):
        ti = t1 if ci == 1.0 else t0 + ci * dt
        yi = slopes.combine(row, y0, dt)
        slopes.append(func(ti, yi, -1 if ci == 1.0 and perturb_end else 0))
    return yi
