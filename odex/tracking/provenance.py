"""Where a run came from: the odex version, the git commit of the checkout it ran from (and whether
that tree had uncommitted changes), and the Hydra choices that differ from the defaults. Recorded in
each W&B run so that a run in the dashboard says what produced it without its folder at hand."""
from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parents[1]     # odex/ (this file is odex/tracking/provenance.py)


def version() -> str:
    """The version of the odex code that is running (`odex.__version__`, the same as pyproject.toml's;
    tests/test_cli.py compares them): an installed distribution's metadata could belong to another
    copy than the one imported."""
    from odex import __version__
    return __version__


@lru_cache(maxsize=1)
def git_state(path: str | Path = PACKAGE_DIR) -> dict[str, Any] | None:
    """{'commit': sha, 'dirty': bool} of the git checkout whose `odex/` folder is `path` (odex's own
    source), or None when odex is not run from its checkout (an installed wheel) or git is missing. `dirty`: tracked
    files differ from the commit (untracked files are ignored: outputs and data live there too)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    try:
        # odex's own checkout only: an installed copy inside some other repository (a virtual
        # environment in a project folder) must not report that repository's commit
        if Path(git("rev-parse", "--show-toplevel")).resolve() / "odex" != Path(path).resolve():
            return None
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def code_state() -> dict[str, Any]:
    """The W&B `run` block's odex_version, git_commit and git_dirty (None outside odex's checkout)."""
    git = git_state()
    return {"odex_version": version(), "git_commit": git and git["commit"], "git_dirty": git and git["dirty"]}


@lru_cache(maxsize=1)
def default_choices() -> dict[str, Any]:
    """The root config's defaults list (conf/train.yaml) as {group: choice}."""
    from omegaconf import OmegaConf

    from odex.config import config_dir

    defaults = OmegaConf.to_container(OmegaConf.load(Path(config_dir()) / "train.yaml")).get("defaults", [])
    return {g: c for entry in defaults if isinstance(entry, dict) for g, c in entry.items()}


def non_default_choices(choices: dict[str, Any]) -> dict[str, Any]:
    """The group choices (hydra.runtime.choices, without Hydra's own hydra/* groups) that differ
    from conf/train.yaml's defaults, e.g. {'grad': 'adjoint', 'experiment': 'hbnode_mnist'}."""
    defaults = default_choices()
    return {g: c for g, c in choices.items()
            if not g.startswith("hydra/") and c is not None and str(c) != str(defaults.get(g))}
