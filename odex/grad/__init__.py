"""Gradient methods, by name. Adding one: a module here, a line in `METHODS`, a YAML in conf/grad/."""
from __future__ import annotations

from ..errors import ConfigError
from .adjoint import Adjoint, SeminormAdjoint
from .anode import CheckpointedANODE
from .base import GradientMethod
from .direct import Direct
from .gq import GaussLegendreAdjoint

METHODS: dict[str, type[GradientMethod]] = {
    "direct": Direct,
    "adjoint": Adjoint,
    "seminorm": SeminormAdjoint,
    "gq": GaussLegendreAdjoint,
    "anode": CheckpointedANODE,
}


def gradient_method(grad: str | GradientMethod, options: dict | None = None) -> GradientMethod:
    """A `GradientMethod` from its name and options, or the instance itself."""
    if isinstance(grad, GradientMethod):
        if options:
            raise ValueError("grad_options only go with a gradient method given by name")
        return grad
    try:
        cls = METHODS[grad]
    except KeyError:
        raise ConfigError(f"unknown gradient method {grad!r}; choose one of {sorted(METHODS)}") from None
    return cls(**(options or {}))


__all__ = ["METHODS", "GradientMethod", "gradient_method", "Direct", "Adjoint", "SeminormAdjoint",
           "GaussLegendreAdjoint", "CheckpointedANODE"]
