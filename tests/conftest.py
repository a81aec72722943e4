"""Shared test helpers: compose configs, train in-process, or run the real CLI in a subprocess.

Every run writes into pytest's temporary folders, with wandb offline and no network.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from odex.config import config_dir
from odex.plugins import on_path

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
# parts defined outside odex, one YAML and one .py each (grad/checkpointed.yaml + sixth_gradient.py,
# ...), added to odex's own as a user adds theirs; nothing here imports them (validation does)
PLUGINS = TESTS / "plugins"
SEARCHPATH = f"hydra.searchpath=[file://{PLUGINS}]"

# A run small enough for a 2-core CPU: 256 digits, 1 epoch, a narrow model.
TINY = [
    "dataset.limit_train=256",
    "dataset.limit_test=128",
    "trainer.max_epochs=1",
    "trainer.progress=false",
    "model.channels=8",
    "model.hidden=16",
]

# one thread: torch reads this when it starts, and trainer.threads=auto honours it (odex/training/threads.py)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# Tests run tiny ops, where OpenMP hand-offs between threads cost more than the arithmetic (tens
# of ms per op on a busy 2-core machine): one thread, here and in the CLI subprocesses.
torch.set_num_threads(1)


def compose_cfg(overrides=(), *, keep_hydra: bool = False):
    """The composed config for `overrides`, as `odex-train` would see it (minus the hydra node).
    Its searchpath's folder goes on sys.path as odex-train puts it (odex.plugins.on_path), since
    without the hydra node the validation stage cannot read it."""
    on_path([PLUGINS])
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[SEARCHPATH, *overrides], return_hydra_config=keep_hydra)
    return cfg


def train_in_process(tmp_path: Path, overrides=(), *, logger: str = "none") -> dict:
    """Compose and call odex.train.run in this process (no Hydra run folder); returns the summary."""
    from odex.train import run

    cfg = compose_cfg([f"logger={logger}", *overrides])
    return run(cfg, tmp_path)


def run_cli(tmp_path: Path, *overrides: str, multirun: bool = False, timeout: int = 300,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m odex.train <overrides>` in a subprocess, outputs under tmp_path."""
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "odex.train"]
    if multirun:
        args += ["-m", f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    else:
        args += [f"hydra.run.dir={run_dir}"]
    full_env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
                "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")]),
                "ODEX_DATA": str(tmp_path / "data"), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(args + [SEARCHPATH, *overrides], cwd=tmp_path, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def read_summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


@pytest.fixture(scope="session")
def trained_cpl():
    """A tiny CPL net trained for a few epochs on digits (seconds), and the test images."""
    from odex.data.digits import digits
    from odex.models.cpl import CPLNetwork
    from odex.objectives.classification import Margin

    torch.manual_seed(0)
    data = digits()
    net = CPLNetwork(data.info, size="tiny", channels=16)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = data.train.x, data.train.y
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        for idx in torch.randperm(len(y), generator=g).split(64):
            loss = Margin()(net, x[idx], y[idx]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval(), data.test.x, data.test.y


@pytest.fixture
def tiny() -> list[str]:
    return list(TINY)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
