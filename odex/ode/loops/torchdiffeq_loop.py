"""torchdiffeq's loop (`solver.loop=torchdiffeq`, the default): `torchdiffeq.odeint` itself, for the
methods torchdiffeq has (odex/ode/tableau.py's `names()`; not a tableau of the user's own).
The one place outside the tests where odex imports torchdiffeq."""
from __future__ import annotations

from odex.errors import ConfigError
from odex.ode import tableau as tableaux


def check(method: str) -> None:
    """A ConfigError unless torchdiffeq has `method`."""
    if method not in tableaux.names():
        raise ConfigError(f"solver.method={method}: solver.loop=torchdiffeq steps only torchdiffeq's own "
                          f"methods ({', '.join(tableaux.names())}); use solver.loop=odex")


def integrate(func, y0, t, *, method, rtol, atol, options, times=None):
    import torchdiffeq

    check(method)
    return torchdiffeq.odeint(func, y0, t, rtol=rtol, atol=atol, method=method, options=options)
