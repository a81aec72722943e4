"""odex: a config-driven experiment runner for neural-ODE research.

The Python API is small: `odeint` (the one place gradient methods plug in) and the error type.
Everything else is driven by `odex-train` and the configs in conf/.

`odeint` is imported on first use (module `__getattr__`, PEP 562): importing the package, as every
`odex-*` command does, must not load torch, so `odex-train --help` answers at once.
"""
from odex.errors import OdexError

__all__ = ["odeint", "OdexError"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "odeint":
        from odex.ode.odeint import odeint

        return odeint
    raise AttributeError(f"module 'odex' has no attribute {name!r}")
