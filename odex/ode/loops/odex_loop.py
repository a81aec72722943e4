"""odex's loop (`solver.loop=odex`): any tableau of odex/ode/tableau.py, on a fixed grid (fixed_grid.py)
or with error control (adaptive.py), after odex's own input handling (inputs.py)."""
from __future__ import annotations

from odex.errors import ConfigError
from odex.ode import tableau as tableaux
from odex.ode.loops.adaptive import AdaptiveLoop
from odex.ode.loops.fixed_grid import FixedGridLoop
from odex.ode.loops.inputs import prepare


def check(method: str) -> None:
    """A ConfigError unless `method` is a Runge-Kutta tableau."""
    if tableaux.tableau(method) is None:
        serves = [m for m in tableaux.names() if tableaux.tableau(m) is not None]
        raise ConfigError(f"solver.method={method}: solver.loop=odex steps {', '.join(serves)}")


def integrate(func, y0, t, *, method, rtol, atol, options, times=None):
    check(method)
    tab = tableaux.tableau(method)
    p = prepare(func, y0, t, rtol, atol, options.pop("norm", None), times)
    if tab.adaptive:
        loop = AdaptiveLoop(tab, p.func, p.y0, p.rtol, p.atol, times=p.times, norm=p.norm, **options)
    else:
        loop = FixedGridLoop(tab, p.func, p.y0, times=p.times, **options)
    return p.solution(loop.integrate(p.t))
