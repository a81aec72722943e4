"""`odex-report <multirun folder>`: one table of a sweep's jobs, its best configuration, and plots.

    odex-report outputs/multirun/2025-01-31/12-00-00-000000
    odex-report <folder> --metric test/acc --out somewhere/else

Reads what every job leaves in its folder -- `.hydra/overrides.yaml` and `.hydra/config.yaml` (Hydra),
`summary.json` (final values and status) and `metrics.jsonl` (one row per epoch) -- and writes into
`<folder>/report/`:

    report.md        the table (overrides, status, final metrics, wall-clock, NFE), the best
                     configuration, the failed jobs and the plots
    report.csv       the same table, every override in one column
    heatmap.png      the metric over learning rate x batch size (a scatter when the values do not
                     form a small grid, as with Optuna)
    loss_vs_time.png training loss against wall-clock time, one colour per gradient method / model
                     (the GQ paper's comparison), or per job when the sweep varies neither
    nfe.png          forward and backward function evaluations per batch, epoch by epoch

Plots need matplotlib (`pip install odex[report]`); without it the tables are still written.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import OdexError

COMPLETED = "completed"
NO_SUMMARY = "unfinished: no summary.json (still running, or killed)"
METRIC_COLUMNS = ("val/acc", "test/acc", "train/loss", "train/acc")


class ReportError(OdexError):
    """The folder holds no sweep jobs, or cannot be read."""


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

    @property
    def status(self) -> str:
        return NO_SUMMARY if self.summary is None else str(self.summary.get("status", "unknown"))

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    def value(self, key: str) -> float | None:
        """A final value from summary.json (or the last epoch row), as a finite float, else None."""
        v = (self.summary or {}).get(key)
        if v is None and self.rows:
            v = self.rows[-1].get(key)
        try:
            v = float(v)
        except (TypeError, ValueError):
            return None
        return v if math.isfinite(v) else None

    def setting(self, dotted: str) -> Any:
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node


def _yaml(path: Path) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def _job_order(job: Job):
    parts = job.name.split("/")
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]


def collect(sweep_dir: str | Path) -> list[Job]:
    """Every job folder under `sweep_dir` (a folder with Hydra's `.hydra/overrides.yaml`)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ReportError(f"{sweep_dir} is not a folder")
    jobs = []
    for overrides in sweep_dir.rglob(".hydra/overrides.yaml"):
        folder = overrides.parent.parent
        if ".submitit" in folder.parts:
            continue
        job = Job(folder=folder, name=folder.relative_to(sweep_dir).as_posix())
        job.overrides = [str(o) for o in (_yaml(overrides) or [])]
        if (folder / ".hydra" / "config.yaml").exists():
            job.config = _yaml(folder / ".hydra" / "config.yaml") or {}
        if (folder / ".hydra" / "hydra.yaml").exists():
            hydra = _yaml(folder / ".hydra" / "hydra.yaml") or {}
            job.choices = dict(hydra.get("hydra", {}).get("runtime", {}).get("choices", {}) or {})
        if (folder / "summary.json").exists():
            job.summary = json.loads((folder / "summary.json").read_text())
        if (folder / "metrics.jsonl").exists():
            job.rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()
                        if line.strip()]
        jobs.append(job)
    return sorted(jobs, key=_job_order)


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def varying_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose value is not the same in every job (the sweep's axes), in first-seen order."""
    seen: dict[str, set] = {}
    for job in jobs:
        for o in job.overrides:
            k, v = _split(o)
            seen.setdefault(k, set()).add(v)
    return [k for k, values in seen.items()
            if len(values) > 1 or any(k not in dict(map(_split, j.overrides)) for j in jobs)]


def default_metric(jobs: list[Job]) -> str:
    return "val/acc" if any(j.value("val/acc") is not None for j in jobs) else "test/acc"


def axes_of(job: Job, jobs: list[Job]) -> str:
    """The job's values of the sweep's axes, e.g. 'optim.lr=0.01 dataset.batch_size=64'."""
    axes = varying_keys(jobs)
    return " ".join(o for o in job.overrides if _split(o)[0] in axes) or " ".join(job.overrides)


def best(jobs: list[Job], metric: str, maximize: bool = True) -> Job | None:
    scored = [j for j in jobs if j.completed and j.value(metric) is not None]
    if not scored:
        return None
    return (max if maximize else min)(scored, key=lambda j: j.value(metric))


def table(jobs: list[Job]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: job, the varying overrides, status, final metrics, wall-clock, NFE."""
    axes = varying_keys(jobs)
    metrics = [m for m in METRIC_COLUMNS if any(j.value(m) is not None for j in jobs)]
    header = ["job", *axes, "status", *metrics, "epochs", "wall_clock_s", "nfe/forward", "nfe/backward"]
    rows = []
    for j in jobs:
        ov = dict(map(_split, j.overrides))
        row = [j.name, *(ov.get(a, "") for a in axes), j.status]
        row += [_fmt(j.value(m)) for m in metrics]
        epochs = j.rows[-1]["epoch"] if j.rows else (j.summary or {}).get("epoch", "")
        row += [str(epochs), _fmt(j.value("time/total_s"), 1), _fmt(j.value("nfe/forward"), 1),
                _fmt(j.value("nfe/backward"), 1)]
        rows.append(row)
    return header, rows


def _fmt(v: float | None, digits: int = 4) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def markdown(jobs: list[Job], metric: str, maximize: bool, plots: list[str], sweep_dir: Path) -> str:
    header, rows = table(jobs)
    out = io.StringIO()
    failed = [j for j in jobs if not j.completed]
    out.write(f"# Sweep report: {sweep_dir}\n\n{len(jobs)} jobs, {len(jobs) - len(failed)} completed, "
              f"{len(failed)} failed or unfinished.\n\n")
    b = best(jobs, metric, maximize)
    if b is None:
        out.write(f"Best configuration: none (no completed job has {metric}).\n\n")
    else:
        out.write(f"Best configuration ({'max' if maximize else 'min'} {metric} = {b.value(metric):.4f}): "
                  f"job {b.name}: `{axes_of(b, jobs)}` (all overrides: `{' '.join(b.overrides)}`)\n\n")
    out.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
    for row in rows:
        out.write("| " + " | ".join(_md_cell(c) for c in row) + " |\n")
    if failed:
        out.write("\n## Failed or unfinished jobs\n\n")
        for j in failed:
            out.write(f"- job {j.name} (`{' '.join(j.overrides)}`): {_md_cell(j.status)} -- see {j.folder}\n")
    if plots:
        out.write("\n## Plots\n\n" + "".join(f"![{p}]({p})\n\n" for p in plots))
    return out.getvalue()


def write_csv(jobs: list[Job], path: Path) -> None:
    header, rows = table(jobs)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*header, "overrides", "folder"])
        for j, row in zip(jobs, rows):
            w.writerow([*row, " ".join(j.overrides), str(j.folder)])


# ---------------------------------------------------------------- plots

def _series_label(jobs: list[Job]) -> dict[str, str]:
    """Colour by gradient method / model when the sweep varies them, else one label per job."""
    keys = [k for k in ("grad", "model") if len({j.choices.get(k) for j in jobs}) > 1]
    if keys:
        return {j.name: ", ".join(f"{k}={j.choices.get(k)}" for k in keys) for j in jobs}
    axes = varying_keys(jobs)
    return {j.name: " ".join(o for o in j.overrides if _split(o)[0] in axes) or f"job {j.name}" for j in jobs}


def plot_heatmap(jobs: list[Job], metric: str, maximize: bool, path: Path) -> bool:
    import matplotlib.pyplot as plt
    import numpy as np

    pts = [(j.setting("optim.lr"), j.setting("dataset.batch_size"), j) for j in jobs]
    pts = [(float(lr), int(bs), j) for lr, bs, j in pts if lr is not None and bs is not None]
    lrs, bss = sorted({p[0] for p in pts}), sorted({p[1] for p in pts})
    if len(lrs) < 2 and len(bss) < 2:
        return False
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * max(len(bss), 2), 1.2 + 0.8 * max(len(lrs), 2)))
    if len(lrs) <= 12 and len(bss) <= 12:
        grid = np.full((len(lrs), len(bss)), np.nan)
        label = [["" for _ in bss] for _ in lrs]
        for lr, bs, j in pts:
            r, c = lrs.index(lr), bss.index(bs)
            v = j.value(metric) if j.completed else None
            if v is not None and (np.isnan(grid[r, c]) or (v > grid[r, c]) == maximize):
                grid[r, c], label[r][c] = v, f"{v:.3f}"
            elif v is None and not label[r][c]:
                label[r][c] = "failed" if j.summary is not None else "unfinished"
        cmap = plt.get_cmap("viridis" if maximize else "viridis_r").with_extremes(bad="lightgrey")
        im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto", origin="lower")
        ax.set_xticks(range(len(bss)), [str(b) for b in bss])
        ax.set_yticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
        for r in range(len(lrs)):
            for c in range(len(bss)):
                # dark text on the bright end of the colour map, white on the dark end
                bright = not np.isnan(grid[r, c]) and sum(cmap(im.norm(grid[r, c]))[:3]) > 1.8
                ax.text(c, r, label[r][c], ha="center", va="center", fontsize=9,
                        color="black" if np.isnan(grid[r, c]) or bright else "white")
    else:
        ok = [(lr, bs, j.value(metric)) for lr, bs, j in pts if j.completed and j.value(metric) is not None]
        im = ax.scatter([p[1] for p in ok], [p[0] for p in ok], c=[p[2] for p in ok], cmap="viridis")
        bad = [(lr, bs) for lr, bs, j in pts if not (j.completed and j.value(metric) is not None)]
        if bad:
            ax.scatter([b for _, b in bad], [lr for lr, _ in bad], marker="x", color="red", label="failed")
            ax.legend()
        ax.set_yscale("log")
    fig.colorbar(im, ax=ax, label=metric)
    ax.set_xlabel("batch size")
    ax.set_ylabel("learning rate")
    ax.set_title(f"{metric} over learning rate x batch size")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_loss_vs_time(jobs: list[Job], path: Path) -> bool:
    import matplotlib.pyplot as plt

    runs = [j for j in jobs if any("train/loss" in r and "time/total_s" in r for r in j.rows)]
    if not runs:
        return False
    labels = _series_label(jobs)
    colours = {lab: f"C{i % 10}" for i, lab in enumerate(dict.fromkeys(labels[j.name] for j in runs))}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    shown = set()
    for j in runs:
        pts = [(r["time/total_s"], r["train/loss"]) for r in j.rows
               if isinstance(r.get("train/loss"), (int, float)) and isinstance(r.get("time/total_s"), (int, float))]
        lab = labels[j.name]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, color=colours[lab],
                label=None if lab in shown else lab, alpha=0.85)
        shown.add(lab)
    ax.set_xlabel("wall-clock time (s)")
    ax.set_ylabel("training loss")
    losses = [r["train/loss"] for j in runs for r in j.rows if isinstance(r.get("train/loss"), (int, float))]
    if losses and min(losses) > 0 and max(losses) / min(losses) > 10:
        ax.set_yscale("log")
    ax.set_title("training loss against wall-clock time")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_nfe(jobs: list[Job], path: Path) -> bool:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    runs = [j for j in jobs if any("nfe/forward" in r for r in j.rows)]
    if not runs:
        return False
    labels = _series_label(jobs)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4 + 0.18 * len(runs)), sharex=True)
    epochs = sorted({r["epoch"] for j in runs for r in j.rows if "epoch" in r})
    for ax, key in zip(axes, ("nfe/forward", "nfe/backward")):
        for i, j in enumerate(runs):
            pts = [(r["epoch"], r[key]) for r in j.rows if isinstance(r.get(key), (int, float))]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, color=f"C{i % 10}",
                    label=f"{j.name}: {labels[j.name]}")
        ax.set_xlabel("epoch")
        if len(epochs) <= 20:
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{key} per batch")
        ax.set_title(key)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=min(3, len(runs)), fontsize=7)
    fig.tight_layout(rect=(0, 0.06 * ((len(runs) + 2) // 3), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def make_plots(jobs: list[Job], metric: str, maximize: bool, out: Path) -> list[str]:
    try:
        import matplotlib
    except ImportError:
        print("odex-report: matplotlib is not installed (pip install odex[report]): tables only", file=sys.stderr)
        return []
    matplotlib.use("Agg")           # files only, no display
    made = []
    for name, draw in (("heatmap.png", lambda p: plot_heatmap(jobs, metric, maximize, p)),
                       ("loss_vs_time.png", lambda p: plot_loss_vs_time(jobs, p)),
                       ("nfe.png", lambda p: plot_nfe(jobs, p))):
        if draw(out / name):
            made.append(name)
    return made


def report(sweep_dir: str | Path, out: str | Path | None = None, metric: str | None = None,
           maximize: bool = True, plots: bool = True) -> dict[str, Any]:
    """Write the report; returns {'jobs', 'best', 'metric', 'out', 'files'}."""
    sweep_dir = Path(sweep_dir)
    jobs = collect(sweep_dir)
    if not jobs:
        raise ReportError(f"no sweep jobs (folders with .hydra/overrides.yaml) under {sweep_dir}")
    metric = metric or default_metric(jobs)
    out = Path(out) if out is not None else sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    made = make_plots(jobs, metric, maximize, out) if plots else []
    (out / "report.md").write_text(markdown(jobs, metric, maximize, made, sweep_dir))
    write_csv(jobs, out / "report.csv")
    return {"jobs": jobs, "best": best(jobs, metric, maximize), "metric": metric, "out": out,
            "files": ["report.md", "report.csv", *made]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="odex-report", description=__doc__.split("\n")[0])
    p.add_argument("sweep_dir", help="a multirun folder (hydra.sweep.dir)")
    p.add_argument("--out", default=None, help="where to write (default: <sweep_dir>/report)")
    p.add_argument("--metric", default=None, help="what 'best' means (default: val/acc, else test/acc)")
    p.add_argument("--minimize", action="store_true", help="lower is better (for a loss)")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    try:
        r = report(args.sweep_dir, args.out, args.metric, not args.minimize, not args.no_plots)
    except OdexError as e:
        print(f"odex-report: error: {e}", file=sys.stderr)
        return 2
    jobs, b = r["jobs"], r["best"]
    failed = [j for j in jobs if not j.completed]
    print(f"{len(jobs)} jobs, {len(failed)} failed or unfinished")
    if b is not None:
        print(f"best {r['metric']} {b.value(r['metric']):.4f}: job {b.name}: {axes_of(b, jobs)}")
    for j in failed:
        print(f"  job {j.name}: {j.status}")
    print(f"report: {r['out'] / 'report.md'} ({', '.join(r['files'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
