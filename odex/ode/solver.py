"""Which numerical solver integrates an ODE block, over which interval, stepped by which loop: plain
data (one YAML per choice in conf/solver/, no torch), handed to every ODE block. The methods are
Butcher tableaux (odex/ode/tableau.py). Design notes: docs/design-notes.md, "odex/ode/solver.py".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from odex.ode import tableau


@dataclass
class Solver:
    # plain data: the keys' types, ranges and rules (a fixed-step method's step) are odex/schema.py
    # Solver's, checked before the run; a block asks the loop whether it steps the method
    method: str = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-3
    t1: float = 1.0
    step_size: float | None = None
    steps: int | None = None
    # An adaptive solve that needs more steps than this fails clearly instead of running forever
    # (a diverging model makes dopri5 shrink its step towards zero).
    max_num_steps: int | None = 1000
    loop: str = "torchdiffeq"

    @property
    def adaptive(self) -> bool:
        return tableau.is_adaptive(self.method)

    @property
    def fixed(self) -> bool:
        return not self.adaptive

    @property
    def h(self) -> float | None:
        """The fixed step size (`steps` wins over `step_size` when both are set)."""
        if not self.fixed:
            return None
        return self.t1 / self.steps if self.steps is not None else self.step_size

    @property
    def options(self) -> dict[str, Any]:
        """torchdiffeq's `options` for this solver."""
        if self.fixed:
            return {"step_size": self.h}
        return {} if self.max_num_steps is None else {"max_num_steps": self.max_num_steps}

    def odeint_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `odex.odeint` (method, loop, tolerances, options)."""
        return dict(method=self.method, loop=self.loop, rtol=self.rtol, atol=self.atol, options=self.options)
