"""torchdiffeq's loop (`solver.loop=torchdiffeq`, the default): torchdiffeq's own solver classes,
stepped by torchdiffeq's own `integrate`, for every method torchdiffeq has; for a method it does
not have (a tableau registered with `odex.ode.tableau.register_tableau`), a torchdiffeq solver
class built from the tableau: a `FixedGridODESolver` whose step is `rk_step.rk_increment`, or an
`RKAdaptiveStepsizeODESolver` carrying the tableau as torchdiffeq's adaptive solvers do.
"""
from __future__ import annotations

from functools import lru_cache

import torch
from torchdiffeq._impl.misc import Perturb
from torchdiffeq._impl.odeint import SOLVERS
from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver, _ButcherTableau
from torchdiffeq._impl.solvers import FixedGridODESolver

from odex.ode.loops.rk_step import rk_increment
from odex.ode.tableau import ButcherTableau, tableau


def stepper(method: str) -> type | None:
    """torchdiffeq's solver class for `method`, or one built from its tableau; None if neither."""
    if method in SOLVERS:
        return SOLVERS[method]
    tab = tableau(method)
    return None if tab is None else solver_class(method, tab)


@lru_cache(maxsize=None)
def solver_class(name: str, tab: ButcherTableau) -> type:
    """A torchdiffeq solver class that steps `tab`."""
    if tab.adaptive:
        return type(f"Tableau_{name}", (RKAdaptiveStepsizeODESolver,), {
            "order": tab.order, "tableau": torchdiffeq_tableau(tab),
            "mid": torch.tensor(tab.mid, dtype=torch.float64)})

    def _step_func(self, func, t0, dt, t1, y0):
        f0 = func(t0, y0, perturb=Perturb.NEXT if self.perturb else Perturb.NONE)
        return rk_increment(func, tab, t0, dt, t1, y0, f0), f0

    return type(f"Tableau_{name}", (FixedGridODESolver,), {"order": tab.order, "_step_func": _step_func})


def torchdiffeq_tableau(tab: ButcherTableau) -> _ButcherTableau:
    """The tableau in torchdiffeq's layout (alpha and beta list the stages after the first)."""
    f64 = dict(dtype=torch.float64)
    return _ButcherTableau(alpha=torch.tensor(tab.c[1:], **f64),
                           beta=[torch.tensor(row, **f64) for row in tab.a[1:]],
                           c_sol=torch.tensor(tab.b, **f64), c_error=torch.tensor(tab.b_error, **f64))
