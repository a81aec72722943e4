"""Where the configs are, and instantiation that keeps user errors as one clear line."""
from __future__ import annotations

from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate

from .errors import ConfigError, OdexError


def config_dir() -> str:
    """conf/ of the source tree, or the copy shipped inside the installed package (odex/conf)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    try:   # an editable install maps the package odex.conf to the repository's conf/
        from importlib.resources import files
        path = Path(str(files("odex.conf")))
        if (path / "train.yaml").is_file():
            return str(path)
    except (ModuleNotFoundError, TypeError):
        pass
    raise RuntimeError(f"odex's configs are missing: no train.yaml next to {here}")


def build(node, **kwargs):
    """`instantiate` whose failures caused by the user surface as an `OdexError`: an error the
    constructor raised on purpose stays as it is; a wrong key or value becomes a `ConfigError`
    naming the config node. Runtime objects (`kwargs`, such as the dataset's DataInfo) are passed
    to the constructor as they are: given to `instantiate` itself, Hydra would turn dataclasses
    into DictConfigs."""
    try:
        if not kwargs:
            return instantiate(node)
        return instantiate(node, _partial_=True)(**kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, OdexError):
            cause = cause.__cause__
        if isinstance(cause, OdexError):
            raise cause from e
        if isinstance(e.__cause__, TypeError) or "_target_" in str(e):
            msg = " ".join(str(e).split())
            raise ConfigError(f"bad configuration: {msg}") from e
        raise
    except TypeError as e:      # a wrong key reaches the constructor only once called
        if kwargs and "argument" in str(e):
            raise ConfigError(f"bad configuration for {node.get('_target_')}: {e}") from e
        raise
