"""Parts of the user's own: a `_target_` that no schema of odex/schema.py states.

Its folder, given as `hydra.searchpath=[file://<folder>]`, goes on `sys.path` (`on_path`); validation
imports the target (`locate`) and reads its `schema` (`schema_of`), a dataclass like odex's own, so
its keys and combinations are checked as odex's are. Plain Python: no torch here.
Design notes: docs/design-notes.md, "odex/plugins.py".
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path


def folders(searchpath) -> list[str]:
    """The local folders of a Hydra searchpath (`file://<folder>` entries; `pkg://` ones are packages
    already importable)."""
    return [str(Path(str(p)[len("file://"):]).expanduser().resolve()) for p in (searchpath or ())
            if str(p).startswith("file://")]


def on_path(dirs) -> None:
    """Make the .py files of these folders (a searchpath's, `folders`) importable: appended to
    sys.path (after odex's and the installed packages, so a file there never shadows them)."""
    for folder in map(str, dirs):
        if folder not in sys.path:
            sys.path.append(folder)


def locate(path: str):
    """The object `path` names (`package.module.Name`, or a nested attribute), importing its module.
    Raises `LookupError` with a one-line reason: no such module, no such name, or the module's own
    import failed (its exception, in one line)."""
    parts = str(path).split(".")
    if len(parts) < 2 or not all(parts):
        raise LookupError("must be an importable path <module>.<name>")
    for i in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 -- the user's module fails on import: say how, in one line
            if isinstance(e, ModuleNotFoundError) and e.name and (module + ".").startswith(e.name + "."):
                continue            # no module by that name: a shorter prefix may be the module
            raise LookupError(f"importing {module} failed: {_one_line(e)}") from None
        for k, attr in enumerate(parts[i:]):
            try:
                obj = getattr(obj, attr)
            except AttributeError:
                raise LookupError(f"{'.'.join(parts[:i + k])} has no {attr!r}") from None
        return obj
    raise LookupError(f"no module {parts[0]!r} is importable (is its folder on hydra.searchpath?)")


def schema_of(obj) -> type | None:
    """The schema dataclass a part of the user's own declares as its `schema` attribute, or None."""
    declared = getattr(obj, "schema", None)
    return declared if isinstance(declared, type) and hasattr(declared, "__dataclass_fields__") else None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
