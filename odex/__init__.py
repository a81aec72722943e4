"""odex: a config-driven experiment runner for neural-ODE research.

The Python API is small: `odeint` (the one place gradient methods plug in) and the error type.
Everything else is driven by `odex-train` and the configs in conf/.
"""
from .errors import OdexError
from .odeint import odeint

__all__ = ["odeint", "OdexError"]
__version__ = "0.1.0"
