"""odex: a config-driven experiment runner for neural-ODE research.

The Python API is small: `odeint` (the one place gradient methods plug in) and the error type.
Everything else is driven by `odex-train` and the configs in conf/.

`odeint` is imported on first use (module `__getattr__`, PEP 562): importing the package, as every
`odex-*` command does, must not load torch, so `odex-train --help` answers at once.
"""
import sys
import types

from .errors import OdexError

__all__ = ["odeint", "OdexError"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "odeint":
        from .odeint import odeint

        return odeint
    raise AttributeError(f"module 'odex' has no attribute {name!r}")


class _Package(types.ModuleType):
    """`odex.odeint` is the function, as it was when this file imported it eagerly. Python binds a
    loaded submodule to its package's attribute of the same name (odex/odeint.py -> odex.odeint),
    which would hide the function once anything imported the submodule; that one binding is
    skipped (the module stays in sys.modules['odex.odeint'] for `from odex.odeint import ...`)."""

    def __setattr__(self, name, value):
        if name == "odeint" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
