"""One explicit Runge-Kutta step read from a Butcher tableau (odex/ode/tableau.py), shared by both
loops' fixed-step solvers:

    k_i = f(t0 + c_i h, y0 + h sum_{j<i} a_ij k_j),     y1 - y0 = h sum_i b_i k_i.

A node c_i = 1 is evaluated at t1 itself (not t0 + h), as torchdiffeq does, so the last stage of a
grid lands exactly on the grid point. Zero coefficients cost nothing.
"""
from __future__ import annotations

import torch

from odex.ode.tableau import ButcherTableau


def weighted_sum(weights: tuple[float, ...], k: list[torch.Tensor]) -> torch.Tensor | None:
    """sum_j w_j k_j over the nonzero weights (None when every weight is zero); each term after the
    first is one fused multiply-add."""
    total = None
    for w, kj in zip(weights, k):
        if w == 0:
            continue
        total = kj * w if total is None else torch.add(total, kj, alpha=w)
    return total


def rk_increment(func, tableau: ButcherTableau, t0: torch.Tensor, dt: torch.Tensor, t1: torch.Tensor,
                 y0: torch.Tensor, f0: torch.Tensor) -> torch.Tensor:
    """y1 - y0 for one step of `tableau` from (t0, y0) with f0 = func(t0, y0) already evaluated."""
    k = [f0]
    for i in range(1, tableau.stages):
        c = tableau.c[i]
        ti = t1 if c == 1.0 else t0 + c * dt
        combined = weighted_sum(tableau.a[i], k)
        k.append(func(ti, y0 if combined is None else y0 + dt * combined))
    return dt * weighted_sum(tableau.b, k)
