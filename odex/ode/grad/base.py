"""What a gradient method is: a way to solve an ODE and get gradients of the solution.

Adding one: a subclass with `solve` (its solves through `odex.ode.loops.integrate`), its `schema`
(a dataclass with the method's keys and its `supports`: odex/schema.py for odex's own), and a YAML
<name>.yaml in conf/grad/ (or in grad/ of a folder on hydra.searchpath) that names it by `_target_`.

Every method has the same call as `odex.odeint` minus `grad`: it returns the solution at the
times `t` (first dimension), and `loss.backward()` through that solution computes gradients with
respect to `y0`, the vector field's parameters and (where supported) `t`. Its constructor takes
the method's own options (backward tolerances, quadrature constant, ...), which are the keys of
its YAML in conf/grad/.
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
    # Its keys and what it supports (adaptive solvers, tuple states, train-mode BatchNorm in the
    # field, a random field, a CUDA graph), declared once: odex's own in odex/schema.py, a method of
    # the user's own beside it. The validation stage reads it before anything is built.
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
