"""Start-up: odex-train's answers that need no training (--help, --cfg job, a rejected override)
do not load torch, and a run loads only what it uses. Checked through sys.modules in a fresh
process at exit, not by timing."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

HEAVY = ("torch", "numpy", "wandb", "submitit", "torchvision", "matplotlib", "optuna", "pytorch_optimizer")


def loaded_modules(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    code = (
        "import atexit, json, sys\n"
        f"atexit.register(lambda: print('MODULES=' + json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)),"
        " file=sys.stderr))\n"
        f"sys.argv = ['odex-train', *{list(args)!r}]\n"
        "from odex.train import main\n"
        "main()\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "ODEX_DATA": str(tmp_path / "data")}
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    line = [ln for ln in p.stderr.splitlines() if ln.startswith("MODULES=")][-1]
    return p, set(json.loads(line[len("MODULES="):]))


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job"], ["--cfg", "job", "model=cpl", "solver=rk4"],
                                  ["optim.lrr=0.1"], ["model=nope"]])
def test_answers_without_training_do_not_import_torch(tmp_path, args):
    p, modules = loaded_modules(tmp_path, *args)
    if args[0].startswith("--"):
        assert p.returncode == 0, p.stderr[-2000:]
    else:
        assert p.returncode != 0 and ("lrr" in p.stderr or "nope" in p.stderr)
    assert "torch" not in modules and "numpy" not in modules, modules
    assert not modules, modules


def test_a_digits_run_without_a_logger_imports_only_what_it_uses(tmp_path):
    p, modules = loaded_modules(tmp_path, "logger=none", "trainer.max_epochs=1", "dataset.limit_train=64",
                                "dataset.limit_test=64", "model.channels=8", "model.hidden=16", "solver=euler",
                                "trainer.progress=false", f"hydra.run.dir={tmp_path / 'run'}")
    assert p.returncode == 0, p.stderr[-2000:]
    assert {"torch", "numpy"} <= modules
    assert not modules & {"wandb", "submitit", "torchvision", "matplotlib", "optuna", "pytorch_optimizer"}, modules


def test_the_package_api_still_works():
    code = ("import sys, odex\n"
            "assert 'torch' not in sys.modules\n"
            "from odex import odeint, OdexError\n"
            "import odex.ode.odeint as module\n"
            "from odex.ode.block import ODEBlock\n"
            "assert callable(odeint) and odex.odeint is odeint and odeint.__module__ == 'odex.ode.odeint'\n"
            "print('ok')\n")
    p = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                       capture_output=True, text=True, timeout=120)
    assert p.stdout.strip() == "ok", p.stderr[-2000:]
