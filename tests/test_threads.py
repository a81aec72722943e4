"""trainer.threads: auto takes the fewest CPUs this process is given (odex/training/threads.py)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from conftest import REPO, TINY, compose_cfg, train_in_process

import odex.training.threads as threads
from odex.config import build
from odex.errors import ConfigError

CLEAN = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK")}


def _in_subprocess(code: str, env: dict) -> dict:
    p = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(REPO)},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_auto_with_an_affinity_mask_of_one_cpu_gives_one_thread():
    """A process pinned to one CPU before torch starts (as `taskset -c 0` or SLURM's task/affinity
    would), with no other limit in its environment: a run's settings give torch 1 thread."""
    code = (
        "import os, json, logging\n"
        "os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})\n"
        "import torch\n"
        "from odex.sweep.process_state import job_settings\n"
        "with job_settings(threads='auto', tf32=True, device=torch.device('cpu'), compiles=False) as n:\n"
        "    inside = torch.get_num_threads()\n"
        "print(json.dumps({'job': n, 'torch': inside,"
        " 'limits': __import__('odex.training.threads').training.threads.cpu_limits()}))\n")
    out = _in_subprocess(code, CLEAN)
    assert out["job"] == out["torch"] == 1
    assert out["limits"]["affinity"] == 1


def test_auto_takes_the_smallest_limit(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    n_affinity = len(os.sched_getaffinity(0))
    assert threads.resolve("auto")[0] <= min(threads.cpu_limits().values()) <= n_affinity
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    n, why = threads.resolve("auto")
    assert n == 1 and "SLURM_CPUS_PER_TASK 1" in why
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "64")      # more than the mask: never more than the mask
    assert threads.resolve("auto")[0] <= n_affinity
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")           # what joblib sets in its workers
    assert threads.resolve("auto") == (1, f"auto: affinity {n_affinity}, OMP_NUM_THREADS 1"
                                       + (f", cgroup cpu.max {threads._cgroup_quota()}"
                                          if threads._cgroup_quota() else ""))


def test_free_cpus_from_the_idle_share(tmp_path, monkeypatch):
    """Two samples of /proc/stat's first line: half the time idle on 2 CPUs is 1 free CPU."""
    stat = tmp_path / "stat"
    samples = iter(["cpu  100 0 100 200 0 0 0 0 0 0\n", "cpu  150 0 150 300 0 0 0 0 0 0\n"])
    real = threads._cpu_times
    monkeypatch.setattr(threads, "_cpu_times", lambda: (stat.write_text(next(samples)), real(stat))[1])
    assert threads.free_cpus(sample_s=0, cpus=2) == 1
    samples = iter(["cpu  100 0 100 200 0 0 0 0 0 0\n", "cpu  101 0 101 398 0 0 0 0 0 0\n"])
    assert threads.free_cpus(sample_s=0, cpus=2) == 2       # 99% idle
    samples = iter(["cpu  100 0 100 200 0 0 0 0 0 0\n", "cpu  200 0 200 200 0 0 0 0 0 0\n"])
    assert threads.free_cpus(sample_s=0, cpus=2) == 1       # all busy: still one thread
    assert real(tmp_path / "missing") is None


def test_cgroup_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads._cgroup_quota(tmp_path / "cpu.max") == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads._cgroup_quota(tmp_path / "cpu.max") is None


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5", "true"])
def test_bad_values_are_one_clear_error(value):
    with pytest.raises(ConfigError, match=r"^trainer\.threads=.*: auto or a whole number >= 1$"):
        build(compose_cfg([f"trainer.threads={value}"]).trainer)


def test_an_integer_is_used_and_logged(tmp_path, caplog):
    import torch

    with caplog.at_level(logging.INFO, logger="odex"):
        summary = train_in_process(tmp_path, [*TINY, "solver=euler", "trainer.threads=1"])
    assert summary["status"] == "completed"
    assert torch.get_num_threads() == 1
    assert "torch threads: 1 (trainer.threads)" in caplog.text
