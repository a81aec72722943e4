"""Gradient methods, by name: a method's name is its YAML, conf/grad/<name>.yaml, whose `_target_`
names the class (no list of methods here). A method of the user's own is a YAML in grad/ of a
folder on `hydra.searchpath` (and a .py beside it): `names` and `gradient_method` are given that folder.
"""
from __future__ import annotations

from pathlib import Path

from odex.errors import ConfigError
from odex.ode.grad.adjoint import Adjoint, SeminormAdjoint
from odex.ode.grad.anode import CheckpointedANODE
from odex.ode.grad.base import GradientMethod
from odex.ode.grad.direct import Direct
from odex.ode.grad.gq import GaussLegendreAdjoint


def _yamls(folders=()) -> dict[str, Path]:
    """name -> conf/grad/<name>.yaml, odex's own and then those of `folders` (config roots)."""
    from odex.config import config_dir

    found: dict[str, Path] = {}
    for root in (config_dir(), *folders):
        for path in sorted((Path(root) / "grad").glob("*.yaml")):
            found.setdefault(path.stem, path)
    return found


def names(folders=()) -> list[str]:
    """Every gradient method's name: conf/grad/'s, and those of `folders` (searchpath folders)."""
    return sorted(_yamls(folders))


def gradient_method(grad: str | GradientMethod, options: dict | None = None, *, folders=()) -> GradientMethod:
    """A `GradientMethod` from its name (conf/grad/<name>.yaml, or grad/<name>.yaml in `folders`:
    its `_target_` built with the YAML's keys, `options` over them), or the instance itself."""
    import yaml

    from odex import plugins

    if not isinstance(grad, str):
        if options:
            raise ValueError("grad_options only go with a gradient method given by name")
        return grad
    found = _yamls(folders)
    if grad not in found:
        raise ConfigError(f"unknown gradient method {grad!r}; choose one of {', '.join(sorted(found))}")
    node = yaml.safe_load(found[grad].read_text()) or {}
    plugins.on_path(folders)
    try:
        cls = plugins.locate(node.pop("_target_"))
    except LookupError as e:
        raise ConfigError(f"grad={grad}: {found[grad]}: {e}") from None
    return cls(**{**node, **(options or {})})


__all__ = ["GradientMethod", "gradient_method", "names", "Direct", "Adjoint", "SeminormAdjoint",
           "GaussLegendreAdjoint", "CheckpointedANODE"]
