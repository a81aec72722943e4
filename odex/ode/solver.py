"""Which numerical solver integrates an ODE block, and over which interval.

A `Solver` is plain data (one YAML per choice in conf/solver/), handed to every ODE block. The
solvers themselves are torchdiffeq's: adaptive `dopri5`, `bosh3`, ... with `rtol`/`atol`, and
fixed-step `euler`, `midpoint` (RK2), `rk4` (torchdiffeq's rk4 is the 3/8 rule) with either
`step_size` or a number of `steps` on [0, t1]. `odex_dopri5`, `odex_bosh3`, ... are torchdiffeq's
adaptive solvers with one host read per step (odex/ode/loops/adaptive.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import odex.ode.loops.adaptive as adaptive_loop  # noqa: F401 -- registers odex_<name> in torchdiffeq's solver table
from odex.errors import ConfigError

ADAPTIVE = {"dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"}
# the same solvers stepped with one host read per step (odex/ode/loops/adaptive.py, trainer.adaptive_loop=odex)
ADAPTIVE |= {"odex_" + name for name in ADAPTIVE}
FIXED = {"euler", "midpoint", "rk4", "heun2", "heun3", "explicit_adams", "implicit_adams"}


@dataclass
class Solver:
    method: str = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-3
    t1: float = 1.0
    step_size: float | None = None
    steps: int | None = None
    # An adaptive solve that needs more steps than this fails clearly instead of running forever
    # (a diverging model makes dopri5 shrink its step towards zero).
    max_num_steps: int | None = 1000

    def __post_init__(self) -> None:
        if self.method not in ADAPTIVE | FIXED:
            raise ConfigError(
                f"solver.method={self.method!r} is not a torchdiffeq solver odex supports; "
                f"choose one of {sorted(ADAPTIVE | FIXED)}")
        if self.t1 <= 0:
            raise ConfigError(f"solver.t1 must be positive, got {self.t1}")
        if self.fixed:
            if self.steps is None and self.step_size is None:
                raise ConfigError(f"solver {self.method} is fixed-step: set solver.step_size or solver.steps")
            if self.steps is not None and self.steps < 1:
                raise ConfigError(f"solver.steps must be >= 1, got {self.steps}")
            if self.step_size is not None and self.step_size <= 0:
                raise ConfigError(f"solver.step_size must be positive, got {self.step_size}")

    @property
    def adaptive(self) -> bool:
        return self.method in ADAPTIVE

    @property
    def fixed(self) -> bool:
        return self.method in FIXED

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
        """Keyword arguments for `odex.odeint` (method, tolerances, options)."""
        return dict(method=self.method, rtol=self.rtol, atol=self.atol, options=self.options)
