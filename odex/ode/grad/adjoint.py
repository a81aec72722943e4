"""The continuous adjoint (Chen et al., NeurIPS 2018), through torchdiffeq's `odeint_adjoint`.

Backwards in time it solves the augmented system [z, a, dL/dtheta]:
    dz/dt = f(t, z),  da/dt = -a^T df/dz,  d(dL/dtheta)/dt = -a^T df/dtheta,
with a += dL/dz(t_i) at each output time. Memory O(1) in the number of steps; the gradient is
exact only up to the backward tolerances (`grad.rtol`, `grad.atol`, null = the forward ones).

`SeminormAdjoint` (Kidger, Chen, Lyons, ICML 2021) leaves the parameter integral out of the
backward error control, which takes fewer backward steps for the same accuracy of z and a.
"""
from __future__ import annotations

import torchdiffeq

from odex import schema
from odex.ode.grad.base import GradientMethod


class Adjoint(GradientMethod):
    supports = schema.Adjoint.supports
    name = "adjoint"
    norm: str | None = None

    def __init__(self, rtol: float | None = None, atol: float | None = None):
        self.rtol = rtol
        self.atol = atol

    def solve(self, func, y0, t, *, method, rtol, atol, options):
        adjoint_options = {k: v for k, v in (options or {}).items() if k != "norm"}
        if self.norm is not None:
            adjoint_options["norm"] = self.norm
        return torchdiffeq.odeint_adjoint(
            func, y0, t, method=method, rtol=rtol, atol=atol, options=options,
            adjoint_rtol=rtol if self.rtol is None else self.rtol,
            adjoint_atol=atol if self.atol is None else self.atol,
            adjoint_method=method, adjoint_options=adjoint_options)


class SeminormAdjoint(Adjoint):
    name = "seminorm"
    norm = "seminorm"
