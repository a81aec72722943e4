"""Gradient methods, by name. Adding one: a module here (or anywhere: `register` it), a YAML in conf/grad/.

Everything that lists the methods (the CLI, the tests, scripts/bench_grad.py) reads `METHODS`, so
a method registered from outside odex, e.g. tests/sixth_gradient.py, is picked up without editing
them.
"""
from __future__ import annotations

from odex.errors import ConfigError
from odex.ode.grad.adjoint import Adjoint, SeminormAdjoint
from odex.ode.grad.anode import CheckpointedANODE
from odex.ode.grad.base import GradientMethod
from odex.ode.grad.direct import Direct
from odex.ode.grad.gq import GaussLegendreAdjoint

METHODS: dict[str, type[GradientMethod]] = {
    "direct": Direct,
    "adjoint": Adjoint,
    "seminorm": SeminormAdjoint,
    "gq": GaussLegendreAdjoint,
    "anode": CheckpointedANODE,
}


def register(name: str, cls: type[GradientMethod], schema_cls: type | None = None) -> None:
    """Make `cls` the gradient method `name` (odex.odeint's `grad=name`, the lists of methods).
    `schema_cls` (a dataclass like those of odex/schema.py, with `supports`) lets the validation
    stage check its keys and combinations; without one its constructor's signature is the schema
    and no combination is refused."""
    from odex import schema

    METHODS[name] = cls
    if schema_cls is not None:
        schema.TARGETS["grad"][f"{cls.__module__}.{cls.__qualname__}"] = schema_cls
        cls.supports = schema_cls.supports


def gradient_method(grad: str | GradientMethod, options: dict | None = None) -> GradientMethod:
    """A `GradientMethod` from its name and options, or the instance itself."""
    if not isinstance(grad, str):
        if options:
            raise ValueError("grad_options only go with a gradient method given by name")
        return grad
    try:
        cls = METHODS[grad]
    except KeyError:
        raise ConfigError(f"unknown gradient method {grad!r}; choose one of {sorted(METHODS)}") from None
    return cls(**(options or {}))


__all__ = ["METHODS", "GradientMethod", "gradient_method", "register", "Direct", "Adjoint", "SeminormAdjoint",
           "GaussLegendreAdjoint", "CheckpointedANODE"]
