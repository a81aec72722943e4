"""`odex-report <multirun folder>`: a sweep's configurations over replicates, the best on validation, plots.

One row per configuration (mean, std and n over its replicates), the best one chosen on validation
data, the jobs that failed, and plots.

    odex-report outputs/multirun/2025-01-31/12-00-00-000000
    odex-report <folder> --replicate trainer.seed     # the replicate axis (default: the seed)
    odex-report <folder> --metric test/acc            # select on test data: said so in the report

Reads what every job leaves in its folder -- `.hydra/overrides.yaml`, `.hydra/config.yaml` and
`.hydra/hydra.yaml` (Hydra), `summary.json` (final values, status, start and end time) and
`metrics.jsonl` (one row per epoch) -- and writes into `<folder>/report/`:

    report.md        first the warnings (no validation split, jobs that failed or could not be
                     read), the best configuration, then one row per configuration: every metric
                     as mean ± std (n), then every job
    report.csv       one row per configuration: `<metric> mean`, `<metric> std`, `<metric> n`
    jobs.csv         one row per job, with its status and problems
    curves.*         training loss and validation / test accuracy against epoch and wall-clock
    nfe.*            forward NFE per batch by epoch; backward NFE only for configurations that
                     make a backward solve (non-zero backward NFE in their metrics)
    epoch_time.*     seconds per training epoch per configuration
    heatmap.*        the metric's mean over learning rate x batch size, when both are swept
    (each as .png and .pdf)

A configuration is the jobs that differ only in the replicate key (`trainer.seed` by default), so
a lucky seed never stands for its configuration: means over the completed replicates, with the
sample standard deviation (n - 1) and n. Jobs that failed, did not finish or could not be read are
listed and never averaged in. The best configuration is chosen on `val/acc` (or `--metric`); a
sweep without a validation split gets no best configuration unless `--metric test/acc` is asked
for explicitly, and then it is labelled as selected on test data. Jobs whose wall-clock
intervals overlapped (parallel launchers) are marked: their times include sharing the machine.

Plots need matplotlib (`pip install odex[report]`); without it the tables are still written.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odex.errors import OdexError

COMPLETED = "completed"
NO_SUMMARY = "unfinished: no summary.json (still running, or killed)"
UNREADABLE = "unreadable"
DEFAULT_METRIC = "val/acc"
DEFAULT_REPLICATE = "trainer.seed"
# the table's metrics, in this order, where any job has them
METRIC_COLUMNS = ("val/acc", "test/acc", "train/loss", "train/acc", "time/total_s", "time/epoch_mean_s",
                  "nfe/forward", "nfe/backward")
SHARED_MARK = "‡"        # configurations with jobs that ran side by side with others


class ReportError(OdexError):
    """The folder holds no sweep jobs, or cannot be read."""


# ---------------------------------------------------------------- reading the jobs

@dataclass
class Job:
    """One job folder of a multirun."""
    folder: Path
    name: str
    overrides: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    choices: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # files that could not be read, torn lines
    unreadable: bool = False                              # its overrides or summary could not be read
    shared_with: list[str] = field(default_factory=list)  # jobs whose wall-clock overlapped this one's

    @property
    def status(self) -> str:
        if self.unreadable:
            return f"{UNREADABLE}: {'; '.join(self.problems)}"
        return NO_SUMMARY if self.summary is None else str(self.summary.get("status", "unknown"))

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    def value(self, key: str) -> float | None:
        """A final value from summary.json (or the last epoch row), as a finite float, else None.
        `time/epoch_mean_s`: the mean of the epochs' `time/epoch_s`."""
        if key == "time/epoch_mean_s":
            times = [v for v in (_number(r.get("time/epoch_s")) for r in self.rows) if v is not None]
            return sum(times) / len(times) if times else self.value("time/epoch_s")
        v = (self.summary or {}).get(key)
        if v is None and self.rows:
            v = self.rows[-1].get(key)
        return _number(v)

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

    def setting(self, dotted: str) -> Any:
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def _job_order(job: Job):
    parts = job.name.split("/")
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]


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


def _read_job(folder: Path, sweep_dir: Path) -> Job:
    job = Job(folder=folder, name=folder.relative_to(sweep_dir).as_posix())
    hydra_dir = folder / ".hydra"
    try:
        job.overrides = [str(o) for o in (_yaml(hydra_dir / "overrides.yaml") or [])]
    except Exception as e:  # noqa: BLE001 -- a damaged job is listed, it does not stop the report
        job.unreadable = True
        job.problems.append(f".hydra/overrides.yaml: {type(e).__name__}: {e}")
    for name, attr in (("config.yaml", "config"), ("hydra.yaml", "choices")):
        if not (hydra_dir / name).exists():
            continue
        try:
            node = _yaml(hydra_dir / name) or {}
            if attr == "choices":
                node = dict(node.get("hydra", {}).get("runtime", {}).get("choices", {}) or {})
            setattr(job, attr, node)
        except Exception as e:  # noqa: BLE001
            job.problems.append(f".hydra/{name}: {type(e).__name__}: {e}")
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


def _superseded_or_internal(rel: Path) -> bool:
    """submitit's own folders, and an earlier attempt that a rerun moved aside inside its job's
    folder (`<job>/attempt-N/`, odex/resume.py): the job is the folder around it, not a second job."""
    return ".submitit" in rel.parts or any(p.startswith("attempt-") for p in rel.parts)


def collect(sweep_dir: str | Path) -> list[Job]:
    """Every job folder under `sweep_dir` (a folder with Hydra's `.hydra/overrides.yaml`); a job
    whose files cannot be read is returned with its problems, never dropped."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ReportError(f"{sweep_dir} is not a folder")
    jobs = [_read_job(o.parent.parent, sweep_dir) for o in sweep_dir.rglob(".hydra/overrides.yaml")
            if not _superseded_or_internal(o.parent.parent.relative_to(sweep_dir))]
    jobs.sort(key=_job_order)
    mark_overlaps(jobs)
    return jobs


def mark_overlaps(jobs: list[Job], slack_s: float = 1.0) -> None:
    """Set each job's `shared_with`: the jobs whose run overlapped its own by more than `slack_s`
    (jobs of a parallel launcher; one after another they only touch)."""
    spans = [(j, j.interval()) for j in jobs]
    spans = [(j, s) for j, s in spans if s is not None]
    for j, (a0, a1) in spans:
        j.shared_with = [k.name for k, (b0, b1) in spans if k is not j and min(a1, b1) - max(a0, b0) > slack_s]


# ---------------------------------------------------------------- configurations

def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def varying_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose value is not the same in every job (the sweep's axes), in first-seen order."""
    seen: dict[str, set] = {}
    readable = [j for j in jobs if not j.unreadable]
    for job in readable:
        for o in job.overrides:
            k, v = _split(o)
            seen.setdefault(k, set()).add(v)
    return [k for k, values in seen.items()
            if len(values) > 1 or any(k not in dict(map(_split, j.overrides)) for j in readable)]


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

    @property
    def completed(self) -> list[Job]:
        return [j for j in self.jobs if j.completed]

    @property
    def failed(self) -> list[Job]:
        return [j for j in self.jobs if not j.completed]

    def stats(self, key: str) -> tuple[float | None, float | None, int]:
        """(mean, sample std, n) of a final value over the completed replicates that have it."""
        vals = [v for v in (j.value(key) for j in self.completed) if v is not None]
        if not vals:
            return None, None, 0
        return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None), len(vals)

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
            key: Any = ("unreadable job", j.name)
            groups[key] = Config(values=(("job", j.name),), jobs=[j])
            continue
        ov = dict(map(_split, j.overrides))
        values = tuple((a, ov.get(a, "")) for a in axes)
        groups.setdefault(values, Config(values=values, jobs=[])).jobs.append(j)
    configs = list(groups.values())
    labels = [" ".join(f"{k}={short(v)}" for k, v in c.values) or "all jobs" for c in configs]
    if len(set(labels)) < len(labels):           # 3 significant figures merged two values: full ones
        labels = [" ".join(f"{k}={v}" for k, v in c.values) or "all jobs" for c in configs]
    for c, lab in zip(configs, labels):
        c.label = lab
    return configs


@dataclass
class Selection:
    metric: str
    maximize: bool
    best: Config | None
    warnings: list[str]
    on_test: bool = False

    def line(self) -> str:
        if self.best is None:
            return "Best configuration: none named (see above)."
        mean, std, n = self.best.stats(self.metric)
        where = ("SELECTED ON TEST DATA (--metric " + self.metric + "): an optimistic estimate, not a "
                 "held-out result" if self.on_test else "selected on validation data")
        failed = f", {len(self.best.failed)} of its jobs failed" if self.best.failed else ""
        return (f"Best configuration, {where}: `{self.best.label}` with {'max' if self.maximize else 'min'} "
                f"mean {self.metric} = {mean:#.4g}" + (f" ± {std:.2g}" if std is not None else "")
                + f" over n={n} replicates{failed}.")


def select(configs: list[Config], metric: str | None, maximize: bool = True) -> Selection:
    """The best configuration by the mean of `metric` over its completed replicates. `metric=None`
    means val/acc; when no job has the metric, no configuration is named. Test metrics are only
    used when asked for by name, and then labelled."""
    explicit = metric is not None
    metric = metric or DEFAULT_METRIC
    warnings = []
    scored = [c for c in configs if c.stats(metric)[2] > 0]
    if not scored:
        if metric.startswith("val/"):
            warnings.append(f"NO VALIDATION SPLIT: no completed job has {metric}, so no best configuration is "
                            f"named. Add one (e.g. dataset.val_fraction=0.1), or pass --metric test/acc to "
                            f"select on test data (labelled as such).")
        else:
            warnings.append(f"no completed job has {metric}: no best configuration is named.")
        return Selection(metric, maximize, None, warnings)
    on_test = metric.startswith("test/")
    if on_test:
        warnings.append(f"The best configuration is SELECTED ON TEST DATA (--metric {metric}): its {metric} "
                        f"is an optimistic estimate, not a held-out result.")
    best = (max if maximize else min)(scored, key=lambda c: c.stats(metric)[0])
    assert explicit or not on_test
    return Selection(metric, maximize, best, warnings, on_test)


# ---------------------------------------------------------------- tables

def _pm(mean: float | None, std: float | None, n: int, digits: int = 4) -> str:
    if mean is None:
        return ""
    return f"{mean:#.{digits}g}" + (f" ± {std:.2g}" if std is not None else "") + f" (n={n})"


def _fmt(v: float | None, digits: int | None = None) -> str:
    """A number for a table: `digits` significant figures, or in full (repr) for the CSV files."""
    return "" if v is None else repr(v) if digits is None else f"{v:#.{digits}g}"


def metric_columns(jobs: list[Job]) -> list[str]:
    return [m for m in METRIC_COLUMNS if any(j.value(m) is not None for j in jobs if j.completed)]


def write_csv(configs: list[Config], metrics: list[str], path: Path) -> None:
    """One row per configuration: its swept values, job counts, `<metric> mean/std/n`."""
    keys = list(dict.fromkeys(k for c in configs for k, _ in c.values))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["configuration", *keys, "jobs", "completed", "failed", "shared_machine",
                    *[f"{m} {s}" for m in metrics for s in ("mean", "std", "n")], "job_folders"])
        for c in configs:
            vals = dict(c.values)
            row = [c.label, *(vals.get(k, "") for k in keys), len(c.jobs), len(c.completed), len(c.failed),
                   sum(bool(j.shared_with) for j in c.jobs)]
            for m in metrics:
                mean, std, n = c.stats(m)
                row += [_fmt(mean), _fmt(std), n]
            w.writerow([*row, " ".join(j.name for j in c.jobs)])


def write_jobs_csv(jobs: list[Job], metrics: list[str], path: Path) -> None:
    axes = varying_keys(jobs)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["job", *axes, "status", *metrics, "epochs", "shared_machine_with", "problems",
                    "overrides", "folder"])
        for j in jobs:
            ov = dict(map(_split, j.overrides))
            w.writerow([j.name, *(ov.get(a, "") for a in axes), j.status, *(_fmt(j.value(m)) for m in metrics),
                        len(j.rows), " ".join(j.shared_with), "; ".join(j.problems), " ".join(j.overrides),
                        str(j.folder)])


def _md_cell(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    return ("| " + " | ".join(map(_md_cell, header)) + " |\n|" + "---|" * len(header) + "\n"
            + "".join("| " + " | ".join(map(_md_cell, r)) + " |\n" for r in rows))


def warnings_of(jobs: list[Job], configs: list[Config], sel: Selection, replicate: str) -> list[str]:
    out = list(sel.warnings)
    bad = [j for j in jobs if not j.completed]
    if bad:
        out.append(f"{len(bad)} of {len(jobs)} jobs failed, did not finish or could not be read; they are listed "
                   f"below and left out of every mean.")
    torn = [j for j in jobs if j.problems and not j.unreadable]
    if torn:
        out.append(f"{len(torn)} of {len(jobs)} jobs have damaged files (listed below).")
    if replicate not in varying_keys(jobs):
        out.append(f"The replicate key {replicate} is not swept: every configuration has n=1 (no spread); "
                   f"sweep it (e.g. {replicate}=0,1,2) or name another with --replicate.")
    shared = [j for j in jobs if j.shared_with]
    if shared:
        out.append(f"{len(shared)} of {len(jobs)} jobs ran side by side with others (overlapping wall-clock, "
                   f"marked {SHARED_MARK}): their times include sharing the machine.")
    return out


def markdown(sweep_dir: Path, jobs: list[Job], configs: list[Config], metrics: list[str], sel: Selection,
             replicate: str, plots: list[str], notes: list[str]) -> str:
    out = io.StringIO()
    out.write(f"# Sweep report: {sweep_dir}\n\n")
    for w in warnings_of(jobs, configs, sel, replicate):
        out.write(f"**Warning:** {w}\n\n")
    n_done = sum(j.completed for j in jobs)
    out.write(f"{len(jobs)} jobs ({n_done} completed) in {len(configs)} configurations; replicate key "
              f"`{replicate}`. Values: mean ± sample standard deviation (n = completed replicates).\n\n")
    out.write(sel.line() + "\n\n")
    if sel.best is not None and sel.metric != "test/acc":
        mean, std, n = sel.best.stats("test/acc")
        if n:
            out.write(f"Its test/acc: {_pm(mean, std, n)}.\n\n")
    out.write("## Configurations\n\n")
    header = ["configuration", "jobs completed", "jobs not completed", *metrics]
    rows = [[c.label + (f" {SHARED_MARK}" if c.shared else ""), len(c.completed), len(c.failed),
             *(_pm(*c.stats(m)) for m in metrics)] for c in configs]
    out.write(_md_table(header, rows))
    bad = [j for j in jobs if not j.completed or j.problems]
    if bad:
        out.write("\n## Failed, unfinished or damaged jobs\n\n")
        for j in bad:
            problems = "" if j.unreadable or not j.problems else f" ({'; '.join(j.problems)})"
            out.write(f"- job {j.name} (`{' '.join(j.overrides)}`): {_md_cell(j.status)}{problems} -- {j.folder}\n")
    out.write("\n## Jobs\n\n")
    axes = varying_keys(jobs)
    header = ["job", *axes, "status", *metrics, "epochs", "shared machine with"]
    rows = []
    for j in jobs:
        ov = dict(map(_split, j.overrides))
        rows.append([j.name, *(ov.get(a, "") for a in axes), j.status, *(_fmt(j.value(m), 4) for m in metrics),
                     len(j.rows), ", ".join(j.shared_with)])
    out.write(_md_table(header, rows))
    if plots or notes:
        out.write("\n## Plots\n\n")
        for n in notes:
            out.write(f"- {n}\n")
        out.write("\n" + "".join(f"![{p}]({p})\n\n" for p in plots))
    return out.getvalue()


def report(sweep_dir: str | Path, out: str | Path | None = None, metric: str | None = None,
           maximize: bool = True, plots: bool = True, replicate: str = DEFAULT_REPLICATE) -> dict[str, Any]:
    """Write the report; returns {'jobs', 'configs', 'selection', 'best', 'metric', 'warnings',
    'out', 'files'}."""
    sweep_dir = Path(sweep_dir)
    jobs = collect(sweep_dir)
    if not jobs:
        raise ReportError(f"no sweep jobs (folders with .hydra/overrides.yaml) under {sweep_dir}")
    configs = configurations(jobs, replicate)
    sel = select(configs, metric, maximize)
    metrics = metric_columns(jobs)
    if sel.metric not in metrics and sel.best is not None:
        metrics.insert(0, sel.metric)
    out = Path(out) if out is not None else sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    if plots:
        from odex.sweep.report_plots import make_plots
        made, notes = make_plots(configs, sel, out)
    else:
        made, notes = [], []
    (out / "report.md").write_text(markdown(sweep_dir, jobs, configs, metrics, sel, replicate,
                                            [p for p in made if p.endswith(".png")], notes))
    write_csv(configs, metrics, out / "report.csv")
    write_jobs_csv(jobs, metrics, out / "jobs.csv")
    return {"jobs": jobs, "configs": configs, "selection": sel, "best": sel.best, "metric": sel.metric,
            "warnings": warnings_of(jobs, configs, sel, replicate), "notes": notes, "out": out,
            "files": ["report.md", "report.csv", "jobs.csv", *made]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="odex-report", description=__doc__.split("\n")[0])
    p.add_argument("sweep_dir", help="a multirun folder (hydra.sweep.dir)")
    p.add_argument("--out", default=None, help="where to write (default: <sweep_dir>/report)")
    p.add_argument("--metric", default=None,
                   help="what 'best' means (default: val/acc; a test metric only when named, and labelled)")
    p.add_argument("--minimize", action="store_true", help="lower is better (for a loss)")
    p.add_argument("--replicate", default=DEFAULT_REPLICATE, metavar="KEY",
                   help=f"the override whose values are replicates of one configuration (default {DEFAULT_REPLICATE})")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    try:
        r = report(args.sweep_dir, args.out, args.metric, not args.minimize, not args.no_plots, args.replicate)
    except OdexError as e:
        print(f"odex-report: error: {e}", file=sys.stderr)
        return 2
    for w in r["warnings"]:
        print(f"odex-report: warning: {w}")
    jobs, configs = r["jobs"], r["configs"]
    print(f"{len(jobs)} jobs in {len(configs)} configurations, {sum(not j.completed for j in jobs)} failed, "
          f"unfinished or unreadable")
    print(r["selection"].line().replace("`", ""))
    for j in jobs:
        if not j.completed or j.problems:
            damage = "" if j.unreadable or not j.problems else f" ({'; '.join(j.problems)})"
            print(f"  job {j.name}: {j.status}{damage}")
    print(f"report: {r['out'] / 'report.md'} ({', '.join(r['files'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
