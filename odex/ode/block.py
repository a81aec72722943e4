"""The ODE block every model uses: y(t1) = y0 + integral_0^t1 f(t, y) dt, its field wrapped once in a
`CountedField`, its time grid a buffer, checked at construction against its loop and gradient
method, solved by `odex.odeint`. Design notes: docs/design-notes.md, "odex/ode/block.py".
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import torch
from torch import nn

from odex.errors import ConfigError
from odex.ode.grad import GradientMethod, gradient_method
from odex.ode.loops import check as check_loop
from odex.ode import field_options
from odex.ode.nfe import CountedField
from odex.ode.odeint import odeint
from odex.ode.solver import Solver


class ODEBlock(nn.Module):
    def __init__(self, field: nn.Module, solver: Solver, grad: GradientMethod | str = "direct", *,
                 options: field_options.FieldOptions | None = None):
        """`options`: how the field is evaluated; None takes those in force where the model is
        built (`field_options.building`, eager float32 elsewhere)."""
        super().__init__()
        self.field = CountedField(field, field_options.CURRENT.get() if options is None else options)
        self.solver = solver
        self.grad = gradient_method(grad)
        check_loop(solver.loop, solver.method)
        self.grad.check(solver, field)
        self.register_buffer("t", torch.tensor([0.0, float(solver.t1)]), persistent=False)
        self.t_host = (0.0, float(self.t[1]))      # the same times on the host: the odex loop reads nothing

    def forward(self, y0, t: torch.Tensor | None = None):
        """The state at t1; or, given times `t`, the whole trajectory (first dimension). A state
        may be a tuple of tensors (then so is the result)."""
        ys = self.integrate(self.field, y0, self.t if t is None else t, None if t is not None else self.t_host)
        if t is not None:
            return ys
        return tuple(y[-1] for y in ys) if isinstance(ys, tuple) else ys[-1]

    def integrate(self, func: nn.Module, y0, t: torch.Tensor, times: tuple[float, ...] | None = None):
        """Solve dz/dt = func(t, z) at the times `t` with this block's solver and gradient method.
        `func` is this block's field or a module that calls it, e.g. the field with a running
        integral appended to the state (odex.objectives.lyapunov): its calls of the field count as this
        block's forward NFE while the solve runs, and as backward NFE afterwards. `times`: a host
        copy of `t`, where the caller has one."""
        self.field.backward_phase = False
        try:
            return odeint(func, y0, t, grad=self.grad, times=times, **self.solver.odeint_kwargs())
        finally:
            # Whatever calls the field from now on (an adjoint during loss.backward()) is backward work.
            self.field.backward_phase = True

    def extra_repr(self) -> str:
        return f"solver={self.solver.method}, grad={self.grad.name}, t1={self.solver.t1}"


def ode_blocks(model: nn.Module) -> list[ODEBlock]:
    """Every ODE block inside `model`."""
    return [m for m in model.modules() if isinstance(m, ODEBlock)]


@contextmanager
def grad_changed(model: nn.Module, grad: GradientMethod | str):
    """Inside the block, every ODE block of `model` differentiates its solve with `grad` (each
    checked against the block's solver and field); the blocks' own methods are restored afterwards."""
    method = gradient_method(grad)
    blocks = ode_blocks(model)
    saved = [b.grad for b in blocks]
    try:
        for b in blocks:
            method.check(b.solver, b.field.field)
            b.grad = method
        yield blocks
    finally:
        for b, g in zip(blocks, saved):
            b.grad = g


@contextmanager
def solver_changed(model: nn.Module, changes: dict | None):
    """Inside the block, every ODE block of `model` integrates with its solver updated by
    `changes` (e.g. {"method": "rk4", "steps": 8}: an evaluation or attack with another solver),
    each checked against the block's gradient method; restored afterwards. t1 stays: it is part
    of the model."""
    changes = dict(changes or {})
    if "t1" in changes:
        raise ConfigError("an evaluation solver cannot change t1 (it is part of the model)")
    blocks = ode_blocks(model) if changes else []
    saved = [b.solver for b in blocks]
    try:
        for b in blocks:
            solver = replace(b.solver, **changes)      # keys: odex/schema.py EvalSolver, checked before the run
            check_loop(solver.loop, solver.method)
            b.grad.check(solver, b.field.field)
            b.solver = solver
        yield
    finally:
        for b, s in zip(blocks, saved):
            b.solver = s
