"""What a gradient method is: a way to solve an ODE and get gradients of the solution, with the call
of `odex.odeint` minus `grad`. Adding one: docs/design-notes.md, "odex/ode/grad/base.py".
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from odex import schema as schemas
from odex.schema import GradSupports
from odex.ode.solver import Solver


class GradientMethod:
    name: str = "?"
    # Its keys and what it supports, declared once: odex's own in odex/schema.py, a method of the
    # user's own beside it. The validation stage reads it before anything is built.
    schema: ClassVar[type] = schemas.Grad

    @property
    def supports(self) -> GradSupports:
        """What the method supports, as its schema declares it (the loops and models ask this)."""
        return self.schema.supports

    def solve(self, func: nn.Module, y0: torch.Tensor, t: torch.Tensor, *, method: str,
              rtol: float, atol: float, options: dict[str, Any] | None, loop: str = "torchdiffeq",
              times: tuple[float, ...] | None = None) -> torch.Tensor:
        """y at the times `t`. Every solve the method makes, forward or backward, goes through
        `odex.ode.loops.integrate` with this `loop` (so both loops serve every method); `times`,
        a host copy of `t` where the caller has one, goes with the forward solve."""
        raise NotImplementedError

    def check(self, solver: Solver, field: nn.Module) -> None:
        """Raise `ConfigError` when this method cannot give correct gradients for this setup."""

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({opts})"
