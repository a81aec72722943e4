"""Multiruns through the real CLI: the lr x batch size grid with the basic launcher and joblib,
submitit_local, the Optuna sweeper, and a failing job among working ones.

Each CLI call is a subprocess (~5 s to start), so the grid is run once (module fixture) and shared.
Subprocesses use one thread: bitwise-equal numbers across launchers, and no oversubscription.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from conftest import TINY, compose_cfg, read_metrics, read_summary, run_cli

import odex.tracking.provenance as provenance
import odex.sweep.report as report
from odex.tracking.wandb_offline import read_offline_run

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
# the file's 3 x 3 axes replaced from the command line: 2 x 2 jobs, not 9 (or 36)
GRID = ["sweep=lr_bs_grid", "optim.lr=0.01,0.001", "dataset.batch_size=32,64", *TINY, "solver=euler"]


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if (p / ".hydra").is_dir()), key=lambda p: int(p.name))


def without_time(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid")
    proc = run_cli(tmp, *GRID, multirun=True, env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "multirun", proc


def check_grid(sweep: Path) -> list[dict]:
    """4 job folders, each completed with val/acc (the file's 10% validation split), and 4 offline
    wandb runs in one group named after the sweep folder and the sweep, each run's config naming
    its Hydra choices and the odex version; odex-sync --dry-run lists all 4."""
    dirs = job_dirs(sweep)
    assert [d.name for d in dirs] == ["0", "1", "2", "3"]
    summaries = [read_summary(d) for d in dirs]
    assert all(s["status"] == "completed" and 0 <= s["val/acc"] <= 1 for s in summaries)
    cells = {(yaml.safe_load((d / ".hydra" / "config.yaml").read_text())["optim"]["lr"],
              yaml.safe_load((d / ".hydra" / "config.yaml").read_text())["dataset"]["batch_size"]) for d in dirs}
    assert cells == {(0.01, 32), (0.01, 64), (0.001, 32), (0.001, 64)}
    runs = [read_offline_run(d / "wandb") for d in dirs]
    assert len({r["id"] for r in runs}) == 4
    # one group: the sweep folder's date and time (here the test's folders), the sweep's name and id
    sweep_id = (sweep / ".odex_sweep_id").read_text().strip()
    assert {r["group"] for r in runs} == {f"{sweep.parent.name}_{sweep.name}_lr_bs_grid_{sweep_id}"}
    for d, r in zip(dirs, runs):
        cfg = yaml.safe_load((d / ".hydra" / "config.yaml").read_text())
        # named by the swept keys only
        assert sorted(r["name"].split(",")) == [f"dataset.batch_size={cfg['dataset']['batch_size']}",
                                                f"optim.lr={cfg['optim']['lr']}"]
        assert {f"job{d.name}", "sweep", "sweep:lr_bs_grid"} <= set(r["tags"])
        assert [h["epoch"] for h in r["history"]] == [1]
        assert r["config"]["dataset"]["val_fraction"] == 0.1
        assert r["config"]["run"]["choices"]["sweep"] == "lr_bs_grid"
        assert r["config"]["run"]["choices"]["model"] == "augmented"
        assert r["config"]["run"]["odex_version"] == provenance.version()
        assert r["summary"]["status"] == "completed"
    listed = sync_dry_run(sweep)
    assert sorted(listed) == sorted(str(p) for d in dirs for p in (d / "wandb").glob("offline-run-*"))
    assert len(listed) == 4
    return summaries


def sync_dry_run(folder: Path) -> list[str]:
    """The runs `odex-sync --dry-run` lists (its indented lines), from the real command."""
    import os
    import subprocess
    import sys

    from conftest import REPO
    p = subprocess.run([sys.executable, "-m", "odex.tracking.sync", str(folder), "--dry-run"], capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert p.returncode == 0, p.stderr
    return [line.strip() for line in p.stdout.splitlines() if line.startswith("  ")]


def test_grid_with_basic_launcher(grid):
    sweep, proc = grid
    check_grid(sweep)
    assert f"odex: sweep finished: 4 jobs, 0 failed; report: odex-report {sweep}" in proc.stdout
    assert f"odex: 4 offline W&B runs; upload them with: odex-sync {sweep}" in proc.stdout
    assert all("launcher:basic" in read_offline_run(d / "wandb")["tags"] for d in job_dirs(sweep))


def test_grid_report(grid, capsys):
    sweep, _ = grid
    assert report.main([str(sweep)]) == 0
    out = sweep / "report"
    # one seed per cell: 4 configurations of n=1, and the report says there is no spread
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert len(rows) == 4 and all(r["val/acc n"] == "1" and r["val/acc std"] == "" for r in rows)
    md = (out / "report.md").read_text()
    assert "The replicate key trainer.seed is not swept" in md
    assert md.count("| completed |") == 4
    best = max(job_dirs(sweep), key=lambda d: read_summary(d)["val/acc"])
    cfg = yaml.safe_load((best / ".hydra/config.yaml").read_text())
    label = f"optim.lr={cfg['optim']['lr']:.3g} dataset.batch_size={cfg['dataset']['batch_size']}"
    assert f"Best configuration, selected on validation data: `{label}`" in md
    for name in ("heatmap", "curves", "nfe", "epoch_time"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert (out / f"{name}.pdf").read_bytes()[:5] == b"%PDF-", name
    assert f"Best configuration, selected on validation data: {label}" in capsys.readouterr().out


@pytest.mark.slow
def test_grid_with_joblib_matches_basic(grid, tmp_path):
    """joblib's reused worker processes (2 workers for 4 jobs) give each job exactly the numbers
    it gets alone: nothing leaks from one job into the next."""
    proc = run_cli(tmp_path, *GRID, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", multirun=True,
                   env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "multirun"
    check_grid(sweep)
    for mine, basic in zip(job_dirs(sweep), job_dirs(grid[0])):
        assert without_time(read_metrics(mine)) == without_time(read_metrics(basic))
    assert all("launcher:joblib" in read_offline_run(d / "wandb")["tags"] for d in job_dirs(sweep))
    # the workers' interleaved epoch lines each name their job and its swept values
    epoch_lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "] epoch 1 | " in line]
    assert sorted(line.split("[job ")[1][0] for line in epoch_lines) == ["0", "1", "2", "3"]
    assert all("optim.lr=" in line and "dataset.batch_size=" in line for line in epoch_lines)


@pytest.mark.slow
def test_submitit_local_with_a_failing_job(tmp_path):
    """Two jobs in separate submitit processes; lr=1e6 blows the state up (the solver's step size
    underflows on NaN): that job is recorded as failed, the other completes, the sweep says so and
    the report shows it."""
    # run health off: with it, lr=1e6 is a `diverged` job, which does not fail the sweep
    proc = run_cli(tmp_path, *TINY, "solver=dopri5", "optim.lr=0.01,1e6", "logger=none",
                   "trainer.health.enabled=false",
                   "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", multirun=True,
                   env=ONE_THREAD)
    assert proc.returncode == 1, proc.stderr[-3000:]      # a job failed: the sweep says so, after its summary
    sweep = tmp_path / "multirun"
    ok, bad = (read_summary(d) for d in job_dirs(sweep))
    assert ok["status"] == "completed"
    assert bad["status"].startswith("failed: ") and "optim.lr" in bad["status"]
    assert "odex: sweep finished: 2 jobs, 1 failed:" in proc.stdout
    assert f"{sweep / '1'}: {bad['status']}" in proc.stdout
    assert "1 of 2 jobs failed" in proc.stdout
    assert (sweep / ".submitit").is_dir()

    r = report.report(sweep)
    assert [j.status for j in r["jobs"]] == ["completed", bad["status"]]
    assert r["best"] is None and r["warnings"][0].startswith("NO VALIDATION SPLIT")   # no val split here
    on_test = report.report(sweep, metric="test/acc", plots=False)
    assert on_test["best"].label == "optim.lr=0.01" and on_test["selection"].on_test
    md = (r["out"] / "report.md").read_text()
    assert "## Diverged, pruned, failed, unfinished or damaged jobs" in md and "job 1 (`" in md and "failed: " in md


def test_optuna_three_trials(tmp_path):
    proc = run_cli(tmp_path, "sweep=optuna", "hydra.sweeper.n_trials=3", *TINY, "solver=euler",
                   "logger=none", multirun=True, env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "multirun"
    dirs = job_dirs(sweep)
    assert len(dirs) == 3
    summaries = [read_summary(d) for d in dirs]
    assert all(s["status"] == "completed" for s in summaries)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    # the sweeper maximised what main returned: each job's val/acc
    assert results["best_value"] == pytest.approx(max(s["val/acc"] for s in summaries))
    lrs = [yaml.safe_load((d / ".hydra/config.yaml").read_text())["optim"]["lr"] for d in dirs]
    assert all(1e-4 <= lr <= 1e-1 for lr in lrs) and len(set(lrs)) == 3


def test_sweep_configs_compose():
    """The sweep and launcher choices compose with the installed plugins (no jobs run)."""
    cfg = compose_cfg(["sweep=lr_bs_grid"], keep_hydra=True)
    assert cfg.dataset.val_fraction == 0.1
    assert dict(cfg.hydra.sweeper.params) == {"optim.lr": "0.1,0.01,0.001", "dataset.batch_size": "32,64,128"}
    assert "odex.sweep.callbacks.SweepSummary" in json.dumps(
        {k: dict(v) for k, v in cfg.hydra.callbacks.items()})
    cfg = compose_cfg(["sweep=optuna"], keep_hydra=True)
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.hydra.sweeper.storage is None
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    slurm = compose_cfg(["hydra/launcher=slurm"], keep_hydra=True).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher") and slurm.gpus_per_node == 1 and slurm.max_num_timeout > 0
    assert compose_cfg(["hydra/launcher=shared_gpu"], keep_hydra=True).hydra.launcher.n_jobs == 3
    assert compose_cfg([]).trainer.resume == "auto"


def test_job_label_on_log_lines_and_bars(capsys):
    """Inside a sweep's job every odex log line and progress bar names the job; parallel jobs get
    no bars by default (their per-epoch log lines remain), trainer.progress decides when set."""
    import logging

    from tqdm import tqdm

    from odex.train import labelled_logs
    from odex.training.trainer import Trainer

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    log = logging.getLogger("odex")
    keep = Keep()
    log.addHandler(keep)
    old_level = log.level
    log.setLevel(logging.INFO)
    try:
        with labelled_logs("job 3 optim.lr=0.01"):
            log.info("epoch %d | train/loss %.3g", 1, 0.5)
            logging.getLogger("other").warning("not ours")
        log.info("after the job")
    finally:
        log.removeHandler(keep)
        log.setLevel(old_level)
    assert records == ["[job 3 optim.lr=0.01] epoch 1 | train/loss 0.5", "after the job"]

    t = Trainer(device="cpu")
    assert t._bar_disabled() is None                 # a bar only on a terminal
    t.parallel = True
    assert t._bar_disabled() is True                 # side by side: no bars by default
    t.progress = True
    assert t._bar_disabled() is False                # asked for
    # the bar names the job
    t.job_label = "job 3 optim.lr=0.01"
    capsys.readouterr()
    bar = t.progress_bar(1, 2)
    bar.update(2)
    bar.close()
    assert "job 3 optim.lr=0.01 epoch 1/10" in capsys.readouterr().err
