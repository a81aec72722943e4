"""Sweeps on a real single-node SLURM cluster (tests/slurm_cluster.py: Debian's slurm-wlm and munge
as background processes) through hydra/launcher=slurm, i.e. submitit job arrays:

- a 2x2 grid completes as one array: 4 run folders and summaries, the sweep summary, odex-report;
- preemption: one array task is requeued mid-epoch with `scontrol requeue` (SIGTERM), another
  reaches a (shortened) time limit, so SLURM sends submitit's USR2 and submitit requeues it; both
  resume from their mid-epoch checkpoints and end with exactly the metrics of the grid's
  uninterrupted runs of the same configuration;
- a job that fails (lr=1e6) is recorded as failed while the others finish.

Needs root and the packages (`.ci/run` installs them); skipped with the reason otherwise.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, read_metrics, read_summary, run_cli

import slurm_cluster
import odex.sweep.report as report

# slow too: about 80 s of wall-clock, mostly waiting (jobs start, SLURM checks time limits every 30 s)
pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# 40 batches of 16 per epoch: the preempted jobs are interrupted in epoch 2 after a few batches
DATA = ["dataset.limit_train=640", "dataset.limit_test=128", "trainer.max_epochs=2", "trainer.progress=false",
        "model.channels=8", "model.hidden=16", "solver=euler", "logger=none"]
# a 1-CPU, no-GPU array task; timeout_min/signal_delay_s: USR2 only once the test shortens the limit
LAUNCHER = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10", "hydra.launcher.signal_delay_s=200"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = slurm_cluster.unavailable()
    if reason:
        pytest.skip(reason)
    c = slurm_cluster.Cluster.start(tmp_path_factory.mktemp("slurm"))
    yield c
    c.stop()


def job_env(cluster) -> dict:
    tests = str(Path(__file__).parent)
    return cluster.env({"PYTHONPATH": os.pathsep.join([str(REPO), tests]), "OMP_NUM_THREADS": "1"})


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if (p / ".hydra").is_dir()), key=lambda p: int(p.name))


def without_time(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def array_ids(sweep: Path) -> set[str]:
    """The SLURM array job ids of the sweep's tasks (submitit's folders are named <array>_<task>)."""
    return {p.name.split("_")[0] for p in (sweep / ".submitit").iterdir() if p.name.split("_")[0].isdigit()}


def submitit_log(sweep: Path, task: str) -> str:
    folder = sweep / ".submitit" / task
    return "".join(f.read_text(errors="replace") for f in sorted(folder.glob("*_log.*")))


@pytest.fixture(scope="module")
def grid(cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slurm_grid")
    t0 = time.monotonic()
    proc = run_cli(tmp, *LAUNCHER, *DATA, "optim.lr=0.01,0.001", "dataset.batch_size=16,32", multirun=True,
                   env=job_env(cluster), timeout=600)
    print(f"slurm grid: {time.monotonic() - t0:.1f} s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + cluster.logs()
    return tmp / "multirun", proc


def test_grid_as_an_array(grid):
    sweep, proc = grid
    dirs = job_dirs(sweep)
    assert [d.name for d in dirs] == ["0", "1", "2", "3"]
    assert len(array_ids(sweep)) == 1, "the 4 jobs are the tasks of one array"
    summaries = [read_summary(d) for d in dirs]
    assert all(s["status"] == "completed" and s["epochs"] == 2 for s in summaries)
    cells = {(yaml.safe_load((d / ".hydra/config.yaml").read_text())["optim"]["lr"],
              yaml.safe_load((d / ".hydra/config.yaml").read_text())["dataset"]["batch_size"]) for d in dirs}
    assert cells == {(0.01, 16), (0.01, 32), (0.001, 16), (0.001, 32)}
    assert f"odex: sweep finished: 4 jobs, 0 failed; report: odex-report {sweep}" in proc.stdout
    # accounting storage is off: one line says so, no warning at every poll
    out = proc.stdout + proc.stderr
    assert "Bypassing sacct error" not in out
    assert out.count("following the array's jobs through squeue") == 1
    # trainer.threads=auto took the task's CPU count (task/none binds nothing: affinity is the node's)
    assert "torch threads: 1 (auto: " in (dirs[0] / "train.log").read_text()
    assert "SLURM_CPUS_PER_TASK 1" in (dirs[0] / "train.log").read_text()
    assert report.main([str(sweep)]) == 0
    assert (sweep / "report" / "report.md").read_text().count("| completed |") == 4


def _task_states(cluster, array: str) -> dict[str, tuple[str, str]]:
    out = cluster.run("squeue", "--noheader", "--array", "--states=all", "--format=%i %T %r", "--jobs", array,
                      check=False).stdout
    return {f[0]: (f[1], f[2]) for f in (line.split(maxsplit=2) for line in out.splitlines()) if len(f) == 3}


def _epochs_logged(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_preempted_tasks_resume_with_identical_metrics_and_a_failed_job_is_recorded(cluster, grid, tmp_path):
    """Task 0: `scontrol requeue` in epoch 2 (SIGTERM to the job). Task 1: its time limit is cut
    to 3 minutes in epoch 2, below signal_delay_s, so slurmctld sends USR2 (within its 30 s
    time-limit check) and submitit requeues the task itself. Task 2 fails. SLURM holds a requeued
    job back for 2 minutes (BeginTime); the test, as an operator could, lets it start at once."""
    sweep = tmp_path / "multirun"
    args = [sys.executable, "-m", "odex.train", "-m", f"hydra.sweep.dir={sweep}", *LAUNCHER, *DATA,
            "dataset.batch_size=16", "optim.lr=0.01,0.001,1e6",
            "trainer.health.enabled=false",     # lr=1e6 fails (with run health it would be `diverged`)
            "+callbacks.slow._target_=slurm_cluster.SlowFirstAttempt", "+callbacks.slow.seconds=2"]
    env = {**os.environ, "WANDB_MODE": "offline", "ODEX_DATA": str(tmp_path / "data"), **job_env(cluster)}
    t0 = time.monotonic()
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    requeued, limited, released = set(), set(), []
    try:
        while proc.poll() is None:
            assert time.monotonic() - t0 < 480, "the preemption sweep took too long:\n" + cluster.logs()
            time.sleep(1)
            if not (sweep / ".submitit").is_dir() or not array_ids(sweep):
                continue
            (array,) = array_ids(sweep)
            for task, (state, reason) in _task_states(cluster, array).items():
                run_dir = sweep / task.split("_")[1]
                if task.endswith("_0") and not requeued and state == "RUNNING" and _epochs_logged(run_dir) >= 1:
                    cluster.run("scontrol", "requeue", task)
                    requeued.add(task)
                if task.endswith("_1") and not limited and state == "RUNNING" and _epochs_logged(run_dir) >= 1:
                    cluster.run("scontrol", "update", f"JobId={task}", "TimeLimit=3")
                    limited.add(task)
                if state == "PENDING" and reason == "BeginTime":
                    cluster.run("scontrol", "update", f"JobId={task}", "StartTime=now", "TimeLimit=10")
                    released.append(task)
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    print(f"slurm preemption sweep: {time.monotonic() - t0:.1f} s; requeued {sorted(requeued)}, "
          f"time limit cut {sorted(limited)}, released {released}")
    assert requeued and limited, out[-2000:] + err[-2000:]
    (array,) = array_ids(sweep)
    assert sorted(released) == [f"{array}_0", f"{array}_1"], (released, out[-2000:], err[-3000:])

    # the interruptions: odex stopped each at a batch boundary of epoch 2 and resumed from there
    log0, log1 = submitit_log(sweep, f"{array}_0"), submitit_log(sweep, f"{array}_1")
    assert "preempted (SIGTERM) in epoch 2 after batch" in log0, log0[-3000:]
    assert "Caught signal SIGUSR2" in log1 and "Requeued job" in log1, log1[-3000:]
    assert "preempted (SIGUSR2) in epoch 2 after batch" in log1, log1[-3000:]
    for log in (log0, log1):
        assert "resuming from" in log and "(epoch 2, batch " in log, log[-3000:]

    # ... and ended with the uninterrupted grid runs' numbers (lr 0.01 / 0.001 at batch size 16)
    reference = {}
    for d in job_dirs(grid[0]):
        c = yaml.safe_load((d / ".hydra/config.yaml").read_text())
        reference[(c["optim"]["lr"], c["dataset"]["batch_size"])] = d
    ok0, ok1, bad = (read_summary(d) for d in job_dirs(sweep))
    assert ok0["status"] == ok1["status"] == "completed"
    for task, lr in (("0", 0.01), ("1", 0.001)):
        mine, ref = read_metrics(sweep / task), read_metrics(reference[(lr, 16)])
        assert [r["epoch"] for r in mine] == [1, 2]
        assert without_time(mine) == without_time(ref), (task, mine, ref)
    summary = json.loads((sweep / "0" / "summary.json").read_text())
    print("preempted task 0, final metrics:", {k: v for k, v in summary.items() if k.startswith("test/")})

    # the failing job is recorded, the others finished, the sweep says so
    assert bad["status"].startswith("failed: ") and "optim.lr" in bad["status"]
    assert "odex: sweep finished: 3 jobs, 1 failed:" in out
    assert f"{sweep / '2'}: {bad['status']}" in out


def test_a_cancelled_job_is_recorded_as_failed_and_the_sweep_ends_with_its_summary(cluster, tmp_path):
    """`scancel` of a running array task (job 0, slowed so that it is mid-epoch): submitit has no
    result for it, and odex's launcher (odex/sweep/slurm_launcher.py) records it as failed in its
    folder instead of letting the sweep end without its summary; job 1 completes; exit status 1."""
    sweep = tmp_path / "multirun"
    args = [sys.executable, "-m", "odex.train", "-m", f"hydra.sweep.dir={sweep}", *LAUNCHER, *DATA,
            "dataset.batch_size=32", "+callbacks.slow._target_=slurm_cluster.SlowFirstAttempt",
            "+callbacks.slow.from_epoch=1", "+callbacks.slow.seconds=5,0"]
    env = {**os.environ, "WANDB_MODE": "offline", "ODEX_DATA": str(tmp_path / "data"), **job_env(cluster)}
    t0 = time.monotonic()
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cancelled = None
    try:
        while proc.poll() is None:
            assert time.monotonic() - t0 < 300, "the cancel sweep took too long:\n" + cluster.logs()
            time.sleep(1)
            if cancelled or not (sweep / ".submitit").is_dir() or not array_ids(sweep):
                continue
            (array,) = array_ids(sweep)
            state = _task_states(cluster, array).get(f"{array}_0", ("", ""))[0]
            if state == "RUNNING" and (sweep / "0" / ".hydra").is_dir():
                cluster.run("scancel", f"{array}_0")
                cancelled = f"{array}_0"
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    print(f"slurm cancel sweep: {time.monotonic() - t0:.1f} s; cancelled {cancelled}")
    assert cancelled, out[-2000:] + err[-2000:]
    assert proc.returncode == 1, out[-3000:] + err[-3000:]
    lost, done = (read_summary(d) for d in job_dirs(sweep))
    assert lost["status"].startswith("failed: "), lost["status"]
    assert done["status"] == "completed"
    assert "odex: sweep finished: 2 jobs, 1 failed:" in out, out[-3000:] + err[-3000:]
    assert f"{sweep / '0'}: {lost['status']}" in out
    print("cancelled job's status:", lost["status"])
    r = report.report(sweep, plots=False, wandb=False)
    assert [j.kind for j in r["jobs"]] == ["failed", "completed"]
