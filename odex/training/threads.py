"""`trainer.threads: auto | <int>`: how many CPU threads torch's operators use. `auto` is the smallest
of the affinity mask, SLURM_CPUS_PER_TASK, OMP_NUM_THREADS, the cgroup quota and the free CPUs;
`passive_openmp_waits()` stops OpenMP threads spinning on busy cores (docs/benchmarks.md).
Design notes: docs/design-notes.md, "odex/training/threads.py".
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

from odex.errors import ConfigError


def passive_openmp_waits() -> None:
    """OMP_WAIT_POLICY=PASSIVE unless already set; call before torch is imported (the odex-* entry
    points do). The environment carries it to sweep workers and SLURM jobs too."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _positive_int(value) -> int | None:
    try:
        n = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return n if n >= 1 else None


def _cgroup_quota(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def cpu_limits() -> dict[str, int]:
    """Every CPU limit this process is given, by where it comes from."""
    try:
        limits = {"affinity": len(os.sched_getaffinity(0))}
    except AttributeError:            # not on Linux
        limits = {"cpu_count": os.cpu_count() or 1}
    for key in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        n = _positive_int(os.environ.get(key))
        if n is not None:
            limits[key] = n
    quota = _cgroup_quota()
    if quota is not None:
        limits["cgroup cpu.max"] = quota
    return limits


def _cpu_times(path: Path = Path("/proc/stat")) -> tuple[int, int] | None:
    """(idle, total) jiffies of all CPUs together, from the first line of /proc/stat."""
    try:
        values = [int(v) for v in path.read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return values[3] + (values[4] if len(values) > 4 else 0), sum(values[:8])


def free_cpus(sample_s: float = 0.2, cpus: int | None = None) -> int | None:
    """How many CPUs nobody is using now: the machine's idle share over `sample_s`, times its CPUs,
    rounded (at least 1); None where /proc/stat cannot say. Threads beyond the free CPUs only wait
    for the busy ones (an epoch of the default model beside one busy process: 6 s on 2 threads
    against 3 s on one, docs/benchmarks.md)."""
    before = _cpu_times()
    time.sleep(sample_s)
    after = _cpu_times()
    if before is None or after is None or after[1] <= before[1]:
        return None
    idle_share = (after[0] - before[0]) / (after[1] - before[1])
    return max(1, round(idle_share * (cpus or os.cpu_count() or 1)))


def resolve(setting) -> tuple[int, str]:
    """The thread count for `trainer.threads` and a few words on where it comes from."""
    if isinstance(setting, str) and setting.strip().lower() == "auto":
        limits = cpu_limits()
        if min(limits.values()) > 1:       # only then can busy CPUs lower the count
            free = free_cpus()
            if free is not None:
                limits["free now"] = free
        n = min(limits.values())
        return n, "auto: " + ", ".join(f"{k} {v}" for k, v in limits.items())
    n = None if isinstance(setting, bool) else _positive_int(setting)
    if n is None or str(setting).strip() != str(n):
        raise ConfigError(f"trainer.threads={setting}: auto or a whole number >= 1")
    return n, "trainer.threads"


def check(setting) -> None:
    """A ConfigError for a value that is neither auto nor a whole number >= 1 (the count itself is
    resolved when the run starts: odex.sweep.process_state.job_settings)."""
    if not (isinstance(setting, str) and setting.strip().lower() == "auto"):
        resolve(setting)
