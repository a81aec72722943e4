"""odex's fixed-grid loop (`solver.loop=odex` with euler, midpoint, rk4, heun3, ... or any fixed-step
tableau): torchdiffeq's fixed-grid algorithm (same grid, steps and interpolation) with no host reads
of device values, so a solve can run ahead of the GPU and be captured in a CUDA graph.
Design notes: docs/design-notes.md, "odex/ode/loops/fixed_grid.py".
"""
from __future__ import annotations

from functools import lru_cache

import torch

from odex.ode.loops.rk_step import Slopes, stages
from odex.ode.tableau import ButcherTableau


@lru_cache(maxsize=256)
def host_grid(t0: float, t1: float, step_size: float, dtype: torch.dtype) -> tuple[float, ...]:
    """torchdiffeq's grid on [t0, t1], computed on the CPU in the time dtype: ceil((t1 - t0) / h + 1)
    points arange(n) * h + t0, the last set to t1."""
    ends = torch.tensor([t0, t1], dtype=dtype)
    n = int(torch.ceil((ends[1] - ends[0]) / step_size + 1).item())
    grid = torch.arange(0, n, dtype=dtype) * step_size + ends[0]
    grid[-1] = ends[1]
    return tuple(grid.tolist())


class FixedGridLoop:
    """Steps `tableau` on the grid of `step_size` from t[0] to t[-1] and interpolates the outputs
    (`interp`: "linear" or "cubic" Hermite). `perturb`: the first stage one ulp after a grid point,
    a stage at c = 1 one ulp before the next (torchdiffeq's option)."""

    def __init__(self, tableau: ButcherTableau, func, y0, *, times: tuple[float, ...], step_size=None,
                 interp="linear", perturb=False, **unused):
        if unused:
            raise ValueError(f"odex's fixed-grid loop does not take {sorted(unused)} (use solver.loop=torchdiffeq)")
        if step_size is None:
            raise ValueError("odex's fixed-grid loop needs a step size (solver.steps or solver.step_size)")
        if interp not in ("linear", "cubic"):
            raise ValueError(f"Unknown interpolation method {interp}")
        self.tableau, self.func, self.y0, self.times = tableau, func, y0, times
        self.step_size, self.interp, self.perturb = float(step_size), interp, bool(perturb)

    def integrate(self, t: torch.Tensor) -> torch.Tensor:
        func, tab, y0, times = self.func, self.tableau, self.y0, self.times
        grid_host = host_grid(times[0], times[-1], self.step_size, t.dtype)
        n = len(grid_host)
        grid = torch.arange(0, n, dtype=t.dtype, device=t.device) * self.step_size + t[0]
        grid[-1] = t[-1]
        dts = grid[1:] - grid[:-1]
        solution, j = [y0], 1
        for k in range(n - 1):
            t0, t1, dt = grid[k], grid[k + 1], dts[k]
            f0 = func(t0, y0, 1 if self.perturb else 0)
            slopes = Slopes(f0, tab.stages)
            stages(func, tab.c, tab.a[1:], t0, dt, t1, y0, slopes, self.perturb)
            y1 = slopes.combine(tab.b, y0, dt)
            while j < len(times) and grid_host[k + 1] >= times[j]:
                solution.append(self._interpolate(k, grid_host, times[j], t[j], t0, t1, y0, y1, f0))
                j += 1
            y0 = y1
        return torch.stack(solution)

    def _interpolate(self, k, grid_host, t_host, t, t0, t1, y0, y1, f0):
        """y at t in [t0, t1]: linear interpolation (the end points exactly, decided on the host
        copies) or cubic Hermite (one more evaluation, at (t1, y1)), as torchdiffeq's."""
        if self.interp == "cubic":
            f1 = self.func(t1, y1)
            h = (t - t0) / (t1 - t0)
            h00, h10 = (1 + 2 * h) * (1 - h) * (1 - h), h * (1 - h) * (1 - h)
            h01, h11 = h * h * (3 - 2 * h), h * h * (h - 1)
            dt = t1 - t0
            return h00 * y0 + h10 * dt * f0 + h01 * y1 + h11 * dt * f1
        if t_host == grid_host[k]:
            return y0
        if t_host == grid_host[k + 1]:
            return y1
        return y0 + (t - t0) / (t1 - t0) * (y1 - y0)
