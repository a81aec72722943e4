"""`odex.odeint`: the one place where a gradient method is chosen.

    y = odeint(func, y0, t, grad="adjoint", method="dopri5", rtol=1e-3, atol=1e-3)

Design notes: docs/design-notes.md, "odex/ode/odeint.py".
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from odex.errors import SolverError
from odex.ode.grad import GradientMethod, gradient_method


def odeint(func: nn.Module, y0: torch.Tensor, t: torch.Tensor, *,
           grad: str | GradientMethod = "direct", method: str = "dopri5",
           rtol: float = 1e-3, atol: float = 1e-3, options: dict[str, Any] | None = None,
           grad_options: dict[str, Any] | None = None, loop: str = "torchdiffeq",
           times: tuple[float, ...] | None = None) -> torch.Tensor:
    """Solve dy/dt = func(t, y) from y(t[0]) = y0 and return y at every time in `t` (stacked on a
    new first dimension), as `torchdiffeq.odeint` does; gradients reach `y0`, `t` and func's
    parameters by the gradient method `grad`.

    func:         an `nn.Module` called as func(t, y) (its parameters are what the adjoint methods
                  differentiate); y0 a tensor (or a tuple of tensors where the method supports it).
    grad:         a name of conf/grad/ (odex.ode.grad.names(): "direct", "adjoint", "gq", ...) or a
                  `GradientMethod` instance; `grad_options` are its options (backward tolerances, ...).
    method, rtol, atol, options: the solver, as in torchdiffeq (options e.g. {"step_size": 0.1});
                  `method` names a tableau in odex.ode.tableau (torchdiffeq's names), or is the path
                  <module>.<NAME> of a ButcherTableau of your own (loop="odex" steps it).
    loop:         "torchdiffeq" (its loop) or "odex" (the same steps without its host reads).
    times:        optional host copy of `t` (floats): the odex loop then reads nothing back.

    A solve that gives up (step underflow, too many steps) raises `odex.errors.SolverError`.
    """
    solver = gradient_method(grad, grad_options)
    try:
        return solver.solve(func, y0, t, method=method, rtol=rtol, atol=atol, options=options, loop=loop,
                            times=times)
    except AssertionError as e:
        raise as_solver_error(e) from e


def as_solver_error(e: AssertionError) -> BaseException:
    """torchdiffeq signals a failed solve with `assert` ('underflow in dt', 'max_num_steps
    exceeded'); turn those into a `SolverError` with a hint, and leave other assertions alone."""
    msg = str(e)
    if "underflow" in msg or "max_num_steps" in msg:
        return SolverError(
            f"the ODE solver gave up ({msg}); the state or parameters are probably NaN/inf or the "
            "dynamics stiff: try a lower optim.lr, trainer.grad_clip, or a looser solver.rtol/atol")
    return e
