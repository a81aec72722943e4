"""A non-editable `pip install .` works from any folder: the configs ship inside the package."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


@pytest.mark.slow
def test_non_editable_install_runs_from_another_folder(tmp_path):
    target = tmp_path / "site"
    # built from a copy: setuptools builds in-tree, and a build/ left in the checkout by an earlier
    # install would ship modules that have since moved
    src = tmp_path / "src"
    for name in ("odex", "conf"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", "--target", str(target), str(src)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    shipped = {str(f.relative_to(target / "odex" / "conf")) for f in (target / "odex" / "conf").rglob("*.yaml")}
    in_repo = {str(f.relative_to(REPO / "conf")) for f in (REPO / "conf").rglob("*.yaml")}
    assert shipped == in_repo
    packages = {str(d.relative_to(REPO)) for d in (REPO / "odex").rglob("__init__.py")}
    assert all((target / pkg).is_file() for pkg in packages), "a package is missing from pyproject.toml"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "WANDB_MODE": "offline"}
    p = subprocess.run([sys.executable, "-c", "import odex; print(odex.__file__)"], cwd=elsewhere,
                       env=env, capture_output=True, text=True)
    assert p.stdout.strip().startswith(str(target)), p.stdout + p.stderr
    p = subprocess.run([sys.executable, "-m", "odex.train", "--cfg", "job", "model=node"], cwd=elsewhere,
                       env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "augment_dim: 0" in p.stdout
