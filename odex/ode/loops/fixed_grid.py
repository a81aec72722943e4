"""Fixed-grid solves with no host synchronisation (`trainer.fixed_grid=odex`, odex/training/fast_paths.py).

torchdiffeq's fixed-grid solvers read the time grid back to the host on every solve and every
step (the `.item()` of its grid constructor, `t[0] > t[1]` and the increasing-times check of its
input checks, `t1 >= t[j]` in its output loop). On a GPU each read stalls the CPU until the queue
drains, so the solve cannot run ahead of the GPU, and it cannot be captured in a CUDA graph. The
steps here do the same arithmetic as torchdiffeq 0.2.5, in the same order and dtypes (the grid
`arange(n) * h + t0` with its last point set to t1, euler, midpoint, and rk4 as torchdiffeq's
3/8 rule), with the number of steps worked out on the host from the block's interval, which the
host knows already (Solver.t1). Gradients are plain backprop through these operations, as
grad=direct through torchdiffeq.

Written here rather than taken from torchdiffeq because its fixed-grid loop itself makes the host
reads; no maintained solver library with torchdiffeq's exact fixed-grid arithmetic avoids them.
Only the ODE block's own interval [0, t1] with grad=direct goes this way; every other solve (a
trajectory at other times, another gradient method, an adaptive solver) goes to torchdiffeq.
"""
from __future__ import annotations

import copy
import math
import weakref
from functools import lru_cache

import torch
from torch import nn

from odex.ode.grad import Direct

_ONE_THIRD, _TWO_THIRDS = 1 / 3, 2 / 3


def _euler(func, t0, dt, t1, y0):
    return dt * func(t0, y0)


def _midpoint(func, t0, dt, t1, y0):
    half_dt = 0.5 * dt
    y_mid = y0 + func(t0, y0) * half_dt
    return dt * func(t0 + half_dt, y_mid)


def _rk4(func, t0, dt, t1, y0):
    """torchdiffeq's rk4: Kutta's 3/8 rule (rk_common.rk4_alt_step_func)."""
    k1 = func(t0, y0)
    k2 = func(t0 + dt * _ONE_THIRD, y0 + dt * k1 * _ONE_THIRD)
    k3 = func(t0 + dt * _TWO_THIRDS, y0 + dt * (k2 - k1 * _ONE_THIRD))
    k4 = func(t1, y0 + dt * (k1 - k2 + k3))
    return (k1 + 3 * (k2 + k3) + k4) * dt * 0.125


STEPS = {"euler": _euler, "midpoint": _midpoint, "rk4": _rk4}


@lru_cache(maxsize=64)
def grid_points(t0: float, t1: float, step_size: float, dtype: torch.dtype) -> int:
    """The number of grid points torchdiffeq uses on [t0, t1]: ceil((t1 - t0) / h + 1), evaluated
    in the time dtype as torchdiffeq does, on the CPU."""
    t = torch.tensor([t0, t1], dtype=dtype)
    return int(math.ceil(torch.ceil((t[1] - t[0]) / step_size + 1).item()))


def solve(func, y0: torch.Tensor, t: torch.Tensor, *, method: str, step_size: float,
          t_host: tuple[float, float]) -> torch.Tensor:
    """y at the two times `t` (= `t_host` on the host), stacked like torchdiffeq's output."""
    return integrate(func, y0, t, grid_points(t_host[0], t_host[1], step_size, t.dtype),
                     method=method, step_size=step_size)


def integrate(func, y0: torch.Tensor, t: torch.Tensor, n: int, *, method: str, step_size: float) -> torch.Tensor:
    """The n - 1 steps of `solve`: device work only (torch.compile can take it as one graph)."""
    step = STEPS[method]
    grid = torch.arange(0, n, dtype=t.dtype, device=t.device) * step_size + t[0]
    grid[-1] = t[-1]
    y = y0
    for k in range(n - 1):
        t0, t1 = grid[k], grid[k + 1]
        y = y + step(func, t0.to(y.dtype), (t1 - t0), t1.to(y.dtype), y)
    return torch.stack((y0, y))


class SyncFreeDirect(Direct):
    """grad=direct whose solves of its ODE block's own interval run on the sync-free grid above.
    Set on a block by `FastPaths.apply` (trainer.fixed_grid=odex)."""

    loop = "odex"

    def __init__(self, block: nn.Module):
        self._block = weakref.ref(block)

    def solve(self, func, y0, t, *, method, rtol, atol, options):
        block = self._block()
        step_size = (options or {}).get("step_size")
        if (block is not None and t is block.t and method in STEPS and step_size is not None
                and isinstance(y0, torch.Tensor)):
            return solve(func, y0, t, method=method, step_size=step_size, t_host=(0.0, float(block.solver.t1)))
        return super().solve(func, y0, t, method=method, rtol=rtol, atol=atol, options=options)

    def __deepcopy__(self, memo):
        # a copied model's grad must point at the copied block (a weakref alone would be shared)
        block = self._block()
        return SyncFreeDirect(copy.deepcopy(block, memo)) if block is not None else Direct()

    def __repr__(self) -> str:
        return "SyncFreeDirect()"


def use_sync_free_grid(block: nn.Module) -> bool:
    """Switch an ODE block to the sync-free fixed grid where that computes what it computes now
    (fixed-step euler/midpoint/rk4 with a gradient method that is plain backprop: grad=direct);
    returns whether it did. The method is asked what it supports, never its type."""
    if block.grad.loop == "odex":
        return True
    if not block.grad.supports.backprop or block.solver.method not in STEPS or block.solver.h is None:
        return False
    block.grad = SyncFreeDirect(block)
    return True
