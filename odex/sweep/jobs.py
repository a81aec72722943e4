"""A sweep's jobs as data: what each job folder holds (`.hydra/`, `summary.json`, `metrics.jsonl`),
and the configurations they form; only completed jobs enter a configuration's statistics.
Design notes (the four kinds of job): docs/design-notes.md, "odex/sweep/jobs.py".
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odex.errors import OdexError

COMPLETED = "completed"
KINDS = ("completed", "diverged", "pruned", "failed")
DEFAULT_REPLICATE = "trainer.seed"
SHARED_MARK = "‡"        # configurations with jobs that ran side by side with others
NOT_METRICS = ("data/", "odex/", "wandb/")     # summary.json's records about the run, not metrics


class ReportError(OdexError):
    """The folder holds no sweep jobs, or cannot be read."""


@dataclass
class Job:
    """One job folder of a multirun."""
    folder: Path
    name: str
    overrides: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # files that could not be read, torn lines
    unreadable: bool = False                              # its overrides or summary could not be read
    shared_with: list[str] = field(default_factory=list)  # jobs whose wall-clock overlapped this one's
    row: dict[str, Any] | None = None                     # the epoch read (--epoch best); None: the end

    @property
    def status(self) -> str:
        if self.unreadable:
            return f"unreadable: {'; '.join(self.problems)}"
        if self.summary is None:
            return "unfinished: no summary.json (still running, or killed)"
        return str(self.summary.get("status", "unknown"))

    @property
    def kind(self) -> str:
        """completed, diverged, pruned or failed (failed: also unfinished, unreadable, unknown)."""
        status = self.status
        if status == COMPLETED:
            return COMPLETED
        head = status.split(":", 1)[0]
        return head if head in ("diverged", "pruned") else "failed"

    @property
    def completed(self) -> bool:
        return self.kind == COMPLETED

    def value(self, key: str) -> float | None:
        """A value as a finite float, else None: from the epoch row chosen with `--epoch best`
        (`self.row`), otherwise the final one from summary.json (or the last epoch row).
        `time/epoch_mean_s`: the mean of the epochs' `time/epoch_s`."""
        if key == "time/epoch_mean_s":
            times = [v for v in (_number(r.get("time/epoch_s")) for r in self.rows) if v is not None]
            return sum(times) / len(times) if times else self.value("time/epoch_s")
        if self.row is not None and key in self.row:
            return _number(self.row[key])
        v = (self.summary or {}).get(key)
        if v is None and self.rows:
            v = self.rows[-1].get(key)
        return _number(v)

    def keys(self) -> set[str]:
        """Every metric name this job recorded (summary.json and metrics.jsonl); not the records
        about the run (split sizes, code, W&B run, start and end times)."""
        out = {k for r in self.rows for k in r if k != "epoch"}
        out |= {k for k, v in (self.summary or {}).items() if "/" in k and _number(v) is not None}
        return {k for k in out if not k.startswith(NOT_METRICS) and k not in ("time/start_unix", "time/end_unix")}

    def series(self, key: str) -> dict[int, float]:
        """{epoch: value} of a metric over the epochs in metrics.jsonl."""
        out = {}
        for r in self.rows:
            e, v = r.get("epoch"), _number(r.get(key))
            if isinstance(e, int) and v is not None:
                out[e] = v
        return out

    def interval(self) -> tuple[float, float] | None:
        """(start, end) of the job's run as Unix times, from summary.json; None for runs that did
        not record them (file times are no substitute: copying a sweep folder resets them)."""
        s = self.summary or {}
        start, end = _number(s.get("time/start_unix")), _number(s.get("time/end_unix"))
        return (start, end) if start is not None and end is not None else None

    def override(self, key: str) -> str | None:
        return dict(map(split_override, self.overrides)).get(key)


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def tally(jobs: list[Job], kinds: tuple[str, ...] = KINDS[1:]) -> str:
    """'1 diverged, 2 failed': how many of `jobs` are of each of `kinds` (those with any)."""
    return ", ".join(f"{n} {k}" for k in kinds if (n := sum(j.kind == k for j in jobs)))


def _yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def _read_rows(path: Path, job: Job) -> None:
    """metrics.jsonl line by line: a line that is not a JSON object (a torn last line, written
    while the job was killed) is left out and named as a problem; the lines before it count."""
    lines = path.read_text(errors="replace").splitlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not an object")
        except ValueError:
            where = "last line" if i == len(lines) else f"line {i}"
            job.problems.append(f"metrics.jsonl {where} is torn or not JSON (left out)")
            continue
        job.rows.append(row)


def read_job(folder: Path, sweep_dir: Path, config: bool = True) -> Job:
    """A job folder's files; `config=False` leaves out `.hydra/config.yaml` (pruning reads only
    the overrides, status and metrics of its siblings, after every epoch)."""
    job = Job(folder=folder, name=folder.relative_to(sweep_dir).as_posix())
    hydra_dir = folder / ".hydra"
    try:
        job.overrides = [str(o) for o in (_yaml(hydra_dir / "overrides.yaml") or [])]
    except Exception as e:  # noqa: BLE001 -- a damaged job is listed, it does not stop the report
        job.unreadable = True
        job.problems.append(f".hydra/overrides.yaml: {type(e).__name__}: {e}")
    if config and (hydra_dir / "config.yaml").exists():
        try:
            job.config = _yaml(hydra_dir / "config.yaml") or {}
        except Exception as e:  # noqa: BLE001
            job.problems.append(f".hydra/config.yaml: {type(e).__name__}: {e}")
    if (folder / "summary.json").exists():
        try:
            job.summary = json.loads((folder / "summary.json").read_text())
            if not isinstance(job.summary, dict):
                raise ValueError("not a JSON object")
        except (ValueError, OSError) as e:
            job.summary, job.unreadable = None, True
            job.problems.append(f"summary.json: {e}")
    if (folder / "metrics.jsonl").exists():
        try:
            _read_rows(folder / "metrics.jsonl", job)
        except OSError as e:
            job.problems.append(f"metrics.jsonl: {e}")
    return job


def job_folders(sweep_dir: str | Path) -> list[Path]:
    """The job folders under `sweep_dir` (those with Hydra's `.hydra/overrides.yaml`), but not
    submitit's own folders nor an earlier attempt that a rerun moved aside inside its job's folder
    (`<job>/attempt-N/`, odex/resume.py): the job is the folder around it."""
    sweep_dir = Path(sweep_dir)
    return [o.parent.parent for o in sweep_dir.rglob(".hydra/overrides.yaml")
            if not any(p == ".submitit" or p.startswith("attempt-") for p in o.relative_to(sweep_dir).parts)]


def collect(sweep_dir: str | Path) -> list[Job]:
    """Every job folder under `sweep_dir`; a job whose files cannot be read is returned with its
    problems, never dropped."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ReportError(f"{sweep_dir} is not a folder")
    jobs = [read_job(folder, sweep_dir) for folder in job_folders(sweep_dir)]
    # in job order: folder 2 before folder 10, numbers before names
    jobs.sort(key=lambda j: [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in j.name.split("/")])
    mark_overlaps(jobs)
    return jobs


def mark_overlaps(jobs: list[Job], slack_s: float = 1.0) -> None:
    """Set each job's `shared_with`: the jobs whose run overlapped its own by more than `slack_s`
    (jobs of a parallel launcher; one after another they only touch)."""
    spans = [(j, s) for j in jobs if (s := j.interval()) is not None]
    for j, (a0, a1) in spans:
        j.shared_with = [k.name for k, (b0, b1) in spans if k is not j and min(a1, b1) - max(a0, b0) > slack_s]


def split_override(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def varying_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose value is not the same in every job (the sweep's axes), in first-seen order."""
    seen: dict[str, set] = {}
    readable = [j for j in jobs if not j.unreadable]
    for job in readable:
        for o in job.overrides:
            k, v = split_override(o)
            seen.setdefault(k, set()).add(v)
    return [k for k, values in seen.items()
            if len(values) > 1 or any(j.override(k) is None for j in readable)]


def held_fixed(jobs: list[Job]) -> list[str]:
    """The overrides every readable job was given with the same value, as written (first job's order)."""
    readable = [j for j in jobs if not j.unreadable and j.overrides]
    if not readable:
        return []
    axes = set(varying_keys(jobs))
    return [o for o in readable[0].overrides if split_override(o)[0] not in axes]


def metric_range(key: str) -> tuple[float, float]:
    """The values a metric can take: accuracies in [0, 1], counts and times >= 0, else any."""
    if key.endswith("/acc") or key.endswith("_acc"):
        return 0.0, 1.0
    if key.startswith(("nfe/", "time/")):
        return 0.0, math.inf
    return -math.inf, math.inf


def short(value: Any) -> str:
    """A value for a label or an axis: numbers to 3 significant figures (0.004430375245218269 ->
    0.00443), integers and words as they are."""
    s = str(value)
    if s.lstrip("-").isdigit():
        return s
    v = _number(s)
    return s if v is None else f"{v:.3g}"


@dataclass
class Config:
    """The jobs that differ only in the replicate key."""
    values: tuple[tuple[str, str], ...]       # (key, value) of every swept key but the replicate
    jobs: list[Job]
    label: str = ""
    replicate: str = DEFAULT_REPLICATE

    @property
    def completed(self) -> list[Job]:
        return [j for j in self.jobs if j.completed]

    @property
    def failed(self) -> list[Job]:
        """Every job that did not complete (diverged, pruned and failed ones)."""
        return [j for j in self.jobs if not j.completed]

    def count(self, kind: str) -> int:
        return sum(j.kind == kind for j in self.jobs)

    def by_replicate(self, key: str) -> dict[str, float]:
        """{replicate value: value of `key`} over the completed jobs that have it."""
        return {j.override(self.replicate) or j.name: v for j in self.completed if (v := j.value(key)) is not None}

    def stats(self, key: str) -> tuple[float | None, float | None, int]:
        """(mean, sample std, n) of a value over the completed replicates that have it."""
        vals = [v for v in (j.value(key) for j in self.completed) if v is not None]
        if not vals:
            return None, None, 0
        return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None), len(vals)

    def interval(self, key: str, level: float = 0.95) -> tuple[float, float] | None:
        """The t-interval for the mean over replicates, mean ± t(level, n-1) · std / sqrt(n),
        clipped to the metric's possible range (an accuracy's mean is in [0, 1]); None below n = 2.
        It assumes replicates scatter roughly normally around the mean."""
        mean, std, n = self.stats(key)
        if mean is None or std is None:
            return None
        from scipy import stats

        half = stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n)
        lo, hi = metric_range(key)
        return max(mean - float(half), lo), min(mean + float(half), hi)

    @property
    def shared(self) -> bool:
        return any(j.shared_with for j in self.jobs)


def configurations(jobs: list[Job], replicate: str = DEFAULT_REPLICATE) -> list[Config]:
    """Jobs grouped by the values of every swept key except `replicate`, in order of first job.
    Unreadable jobs (no overrides) are each their own configuration."""
    axes = [k for k in varying_keys(jobs) if k != replicate]
    groups: dict[Any, Config] = {}
    for j in jobs:
        if j.unreadable and not j.overrides:
            groups[("unreadable job", j.name)] = Config(values=(("job", j.name),), jobs=[j], replicate=replicate)
            continue
        values = tuple((a, j.override(a) or "") for a in axes)
        groups.setdefault(values, Config(values=values, jobs=[], replicate=replicate)).jobs.append(j)
    configs = list(groups.values())
    labels = [" ".join(f"{k}={short(v)}" for k, v in c.values) or "all jobs" for c in configs]
    if len(set(labels)) < len(labels):           # 3 significant figures merged two values: full ones
        labels = [" ".join(f"{k}={v}" for k, v in c.values) or "all jobs" for c in configs]
    for c, lab in zip(configs, labels):
        c.label = lab
    return configs
