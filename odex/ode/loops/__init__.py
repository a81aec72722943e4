"""How a solve is stepped (`solver.loop`), and `integrate`, the one function every gradient method's
solves go through.

- `torchdiffeq` (torchdiffeq_loop.py): `torchdiffeq.odeint`, its own solvers and loop.
- `odex` (odex_loop.py): odex's tableaux stepped by odex's stepper without torchdiffeq's host reads
  of device values: a fixed grid decided on the host (fixed_grid.py: no read at all when the caller
  knows the times, as an ODE block does), error control with one host read per attempted step
  instead of about nine (adaptive.py). Same steps, NFE, solutions and gradients as torchdiffeq's
  loop (to rounding; tests/test_loops.py checks it in float64 for every gradient method).

host_reads.py counts a loop's host reads (the CPU stand-in for GPU syncs).
"""
from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from odex.errors import ConfigError

#: loop name -> the module that implements it (`check(method)`, `integrate(...)`), imported on use
LOOPS: dict[str, str] = {"torchdiffeq": "odex.ode.loops.torchdiffeq_loop", "odex": "odex.ode.loops.odex_loop"}


@cache
def _loop(loop: str):
    if loop not in LOOPS:
        raise ConfigError(f"solver.loop={loop}: must be one of {', '.join(LOOPS)}")
    return importlib.import_module(LOOPS[loop])


def check(loop: str, method: str) -> None:
    """A ConfigError (one line) where `loop` cannot step `method`."""
    _loop(loop).check(method)


def integrate(func, y0, t, *, method: str, loop: str = "torchdiffeq", rtol: Any = 1e-3, atol: Any = 1e-3,
              options: dict | None = None, times: tuple[float, ...] | None = None):
    """Solve dy/dt = func(t, y) from y(t[0]) = y0 and return y at every time in `t` (first
    dimension), as `torchdiffeq.odeint` does, stepping `method` with `loop`. `y0` is a tensor or a
    tuple of tensors; `t` increasing or decreasing. `options` are the solver's (step_size,
    max_num_steps, norm, interp, ...). `times` is a host copy of `t` where the caller has one: the
    odex loop then reads nothing back to decide its steps."""
    return _loop(loop).integrate(func, y0, t, method=method, rtol=rtol, atol=atol, options=dict(options or {}),
                                 times=times)
