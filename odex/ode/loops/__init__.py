"""How a solve is stepped (`solver.loop`: `torchdiffeq`, or `odex`: odex's tableaux without
torchdiffeq's host reads, same steps, NFE, solutions and gradients), and `integrate`, the one
function every gradient method's solves go through. Design notes: docs/design-notes.md, "odex/ode/loops/__init__.py".
"""
from __future__ import annotations

from typing import Any

from odex.errors import ConfigError
from odex.ode.loops import odex_loop, torchdiffeq_loop

#: loop name -> the module that implements it (`check(method)`, `integrate(...)`)
LOOPS = {"torchdiffeq": torchdiffeq_loop, "odex": odex_loop}


def _loop(loop: str):
    if loop not in LOOPS:
        raise ConfigError(f"solver.loop={loop}: must be one of {', '.join(LOOPS)}")
    return LOOPS[loop]


def check(loop: str, method: str) -> None:
    """A ConfigError (one line) where `loop` cannot step `method`."""
    _loop(loop).check(method)


def integrate(func, y0, t, *, method: str, loop: str = "torchdiffeq", rtol: Any = 1e-3, atol: Any = 1e-3,
              options: dict | None = None, times: tuple[float, ...] | None = None):
    """Solve dy/dt = func(t, y) from y(t[0]) = y0 and return y at every time in `t` (first
    dimension), as `torchdiffeq.odeint` does, stepping `method` with `loop`. `y0` is a tensor or a
    tuple of tensors; `t` increasing or decreasing. `options` are the solver's (step_size,
    max_num_steps, norm, interp, ...). `times` is a host copy of `t` where the caller has one: the
    odex loop then reads nothing back to decide its steps. The loop gets its own copy of `options`."""
    return _loop(loop).integrate(func, y0, t, method=method, rtol=rtol, atol=atol, options=dict(options or {}),
                                 times=times)
