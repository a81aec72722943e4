"""How a solve is stepped (`solver.loop`), and `integrate`, the one function every gradient method's
solves go through.

- `torchdiffeq` (torchdiffeq_loop.py): torchdiffeq's own solvers and loop.
- `odex`: the same algorithms without torchdiffeq's host reads of device values: a fixed-step
  tableau on a grid decided on the host (fixed_grid.py: no read at all when the caller knows the
  times, as an ODE block does), an adaptive one with one host read per attempted step instead of
  about nine (adaptive.py). Same steps, NFE, solutions and gradients as torchdiffeq's loop (to
  rounding; tests/test_loops.py checks it in float64 for every gradient method).

Both read the solvers as Butcher tableaux (odex/ode/tableau.py). host_reads.py counts a loop's
host reads (the CPU stand-in for GPU syncs).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torchdiffeq._impl.misc import Perturb, _check_inputs, _flat_to_shape, _nextafter, _rms_norm

from odex.errors import ConfigError
from odex.ode import tableau as tableaux


def _odex_stepper(method: str) -> type | None:
    from odex.ode.loops import adaptive, fixed_grid

    tab = tableaux.tableau(method)
    if tab is None:
        return None
    return (adaptive if tab.adaptive else fixed_grid).solver_class(method, tab)


def _torchdiffeq_stepper(method: str) -> type | None:
    from odex.ode.loops import torchdiffeq_loop

    return torchdiffeq_loop.stepper(method)


#: loop name -> (method name -> solver class, or None where the loop cannot step that method)
LOOPS: dict[str, Callable[[str], type | None]] = {"torchdiffeq": _torchdiffeq_stepper, "odex": _odex_stepper}


def stepper(loop: str, method: str) -> type:
    """The solver class with which `loop` steps `method`; a ConfigError where it has none."""
    try:
        cls = LOOPS[loop](method)
    except KeyError:
        raise ConfigError(f"solver.loop={loop}: must be one of {', '.join(LOOPS)}") from None
    if cls is None:
        serves = [m for m in tableaux.names() if LOOPS[loop](m) is not None]
        raise ConfigError(f"solver.method={method}: solver.loop={loop} steps {', '.join(serves)}")
    return cls


def integrate(func, y0, t: torch.Tensor, *, method: str, loop: str = "torchdiffeq", rtol: Any = 1e-3,
              atol: Any = 1e-3, options: dict | None = None, times: tuple[float, ...] | None = None):
    """Solve dy/dt = func(t, y) from y(t[0]) = y0 and return y at every time in `t` (first
    dimension), as `torchdiffeq.odeint` does, stepping `method` with `loop`. `options` are the
    solver's (step_size, max_num_steps, norm, interp, ...). `times` is a host copy of `t` where the
    caller has one: the odex loop then reads nothing back to decide its steps.

    This is torchdiffeq's `odeint` with the solver class chosen by the loop rather than looked up
    in torchdiffeq's table: its input handling (`_check_inputs`: tuple states flattened, decreasing
    times negated, norms, the `perturb` time argument) is reused as it is. Only for the case the
    odex loop exists for -- a tensor state on increasing times the host knows -- is it skipped,
    because its checks read `t` back; there the field gets the time in the state's dtype (and the
    adaptive solvers' one-ulp perturbations) exactly as torchdiffeq's wrapper gives it.
    """
    cls = stepper(loop, method)
    options = dict(options or {})
    if (times is not None and getattr(cls, "reads_times", False) and isinstance(y0, torch.Tensor) and not y0.is_complex()
            and all(a < b for a, b in zip(times, times[1:]))):
        options.setdefault("norm", _rms_norm)
        return cls(func=_TimeInStateDtype(func), y0=y0, rtol=rtol, atol=atol, times=tuple(times),
                   **options).integrate(t)
    shapes, func, y0, t, rtol, atol, method, options, _, _ = _check_inputs(
        func, y0, t, rtol, atol, method, options, None, {method: cls})
    solution = cls(func=func, y0=y0, rtol=rtol, atol=atol, **options).integrate(t)
    if shapes is not None:
        solution = _flat_to_shape(solution, (len(t),), shapes)
    return solution


class _TimeInStateDtype:
    """func(t, y) with t in y's dtype, moved one ulp where an adaptive solver asks (torchdiffeq's
    `_PerturbFunc`, without its per-call `y.abs()`, which only served complex states)."""

    def __init__(self, func):
        self.func = func

    def __call__(self, t, y, *, perturb=Perturb.NONE):
        t = t.to(y.dtype)
        if perturb is Perturb.NEXT:
            t = _nextafter(t, t + 1)
        elif perturb is Perturb.PREV:
            t = _nextafter(t, t - 1)
        return self.func(t, y)
