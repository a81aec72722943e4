"""`odex-report <multirun folder>`: a sweep's configurations over replicates, the best one with its
uncertainty, what every job held fixed, a command that reruns the best, plots.

Writes `<folder>/report/` (report.md, report.csv, jobs.csv, the plots of report_plots.py, and an
offline W&B run when the jobs logged to W&B). Every rule of the decision is stated in report.md.
Design notes: docs/design-notes.md, "odex/sweep/report.py" (the files, the decision rules).
"""
from __future__ import annotations

import argparse
import csv
import difflib
import io
import math
import shlex
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odex.errors import OdexError
from odex.sweep.jobs import (DEFAULT_REPLICATE, KINDS, SHARED_MARK, Config, Job, ReportError, _number,  # noqa: F401
                             collect, configurations, held_fixed, short, split_override, tally, varying_keys)

DEFAULT_METRIC = "val/acc"
ALPHA = 0.05            # the level of the test against the best
# the table's metrics, in this order, where any job has them
METRIC_COLUMNS = ("val/acc", "test/acc", "train/loss", "train/acc", "time/total_s", "time/epoch_mean_s",
                  "nfe/forward", "nfe/backward")
EPOCHS = ("last", "best")


class UsageError(ReportError):
    """A command-line value that names nothing in the sweep (exit status 2)."""


def pick_epochs(jobs: list[Job], epoch: str, metric: str, maximize: bool) -> str:
    """`--epoch best`: point each job at its epoch with the best validation value (the selection
    metric when it is a validation one, else val/acc, maximised), as a best-on-validation checkpoint
    would keep it; `last`: the final values. Returns the sentence the report prints."""
    if epoch == "last":
        for j in jobs:
            j.row = None
        return "each job's last epoch (final values)"
    by, up = (metric, maximize) if metric.startswith("val/") else ("val/acc", True)
    for j in jobs:
        rows = [r for r in j.rows if _number(r.get(by)) is not None]
        j.row = (max if up else min)(rows, key=lambda r: _number(r[by])) if rows else None
    return f"each job's best epoch on validation ({by}, {'max' if up else 'min'})"


# ---------------------------------------------------------------- selection

@dataclass
class Row:
    """One configuration's line in the ranking."""
    config: Config
    rank: int | None
    missing: list[str]                   # replicate values without a completed job, with the reason
    p: float | None = None               # the test against the best
    test: str = ""
    tied: bool = False                   # not distinguishable from the best


@dataclass
class Selection:
    metric: str
    maximize: bool
    best: Config | None
    warnings: list[str]
    on_test: bool = False
    rows: list[Row] = field(default_factory=list)
    exact_ties: list[Config] = field(default_factory=list)
    epoch: str = "each job's last epoch (final values)"

    @property
    def where(self) -> str:
        """How the selection was made, for every label that names the best."""
        if self.metric.startswith("val/"):
            return "selected on validation data"
        if self.metric.startswith("test/"):
            return "SELECTED ON TEST DATA"
        if self.metric.startswith("train/"):
            return "selected on training data"
        return f"selected on {self.metric}, not on held-out data"

    def row(self, config: Config) -> Row | None:
        return next((r for r in self.rows if r.config is config), None)

    def line(self) -> str:
        if self.best is None:
            return "Best configuration: none named (see above)."
        mean, std, n = self.best.stats(self.metric)
        where = self.where + (f" (--metric {self.metric}): an optimistic estimate, not a held-out result"
                              if self.on_test else "")
        ci = self.best.interval(self.metric)
        missing = self.row(self.best).missing
        return (f"Best configuration, {where}: `{self.best.label}` with {'max' if self.maximize else 'min'} "
                f"mean {self.metric} = {mean:#.4g}" + (f" ± {std:.2g}" if std is not None else "")
                + f" over n={n} replicates"
                + (f", 95% interval [{ci[0]:#.4g}, {ci[1]:#.4g}]" if ci else ", no interval (n < 2)")
                + (f"; MISSING {len(missing)} replicate(s): {', '.join(missing)}" if missing else "") + ".")


def expected_replicates(jobs: list[Job], replicate: str) -> list[str]:
    """The replicate values the sweep ran (every job's, in first-seen order)."""
    return list(dict.fromkeys(v for j in jobs if (v := j.override(replicate)) is not None))


def missing_replicates(config: Config, expected: list[str]) -> list[str]:
    """'<value> (<kind>)' for each replicate the configuration did not complete."""
    done = {j.override(config.replicate) for j in config.completed}
    kinds = {j.override(config.replicate): j.kind for j in config.jobs}
    return [f"{config.replicate}={v} ({kinds.get(v, 'not run')})" for v in expected if v not in done]


def compare(best: Config, other: Config, metric: str) -> tuple[float | None, str]:
    """(two-sided p, test name) for the difference of `other`'s mean from `best`'s: paired t-test
    when both completed the same replicates (at least 2), Welch's t-test otherwise (both n >= 2);
    (None, reason) when neither applies. scipy's t-tests; spreads of zero (all replicates equal)
    are settled by hand, where scipy returns NaN."""
    from scipy import stats

    a, b = best.by_replicate(metric), other.by_replicate(metric)
    if set(a) == set(b) and len(a) >= 2:
        xa, xb = [a[k] for k in sorted(a)], [b[k] for k in sorted(a)]
        diffs = [u - v for u, v in zip(xa, xb)]
        if max(diffs) == min(diffs):        # constant difference: no spread to test against
            return (1.0 if diffs[0] == 0 else 0.0), "paired t-test (constant difference)"
        return float(stats.ttest_rel(xa, xb).pvalue), "paired t-test"
    if len(a) >= 2 and len(b) >= 2:
        xa, xb = list(a.values()), list(b.values())
        if max(xa) == min(xa) and max(xb) == min(xb):
            return (1.0 if xa[0] == xb[0] else 0.0), "Welch t-test (no spread)"
        with warnings.catch_warnings():     # one sample without spread: scipy warns, the test stands
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(stats.ttest_ind(xa, xb, equal_var=False).pvalue), "Welch t-test"
    return None, "no test (n < 2)"


def select(configs: list[Config], metric: str | None, maximize: bool = True,
           expected: list[str] | None = None) -> Selection:
    """The best configuration by the mean of `metric` over its completed replicates, the ranking
    and the set not distinguishable from the best. `metric=None` means val/acc; when no job has
    the metric, no configuration is named. Test metrics are only used when asked for by name,
    and then labelled."""
    metric = metric or DEFAULT_METRIC
    warnings = []
    expected = expected or []
    scored = [c for c in configs if c.stats(metric)[2] > 0]
    if not scored:
        if metric.startswith("val/"):
            warnings.append(f"NO VALIDATION SPLIT: no completed job has {metric}, so no best configuration is "
                            f"named. Add one (e.g. dataset.val_fraction=0.1), or pass --metric test/acc to "
                            f"select on test data (labelled as such).")
        else:
            warnings.append(f"no completed job has {metric}: no best configuration is named.")
        return Selection(metric, maximize, None, warnings,
                         rows=[Row(c, None, missing_replicates(c, expected)) for c in configs])
    on_test = metric.startswith("test/")
    if on_test:
        warnings.append(f"The best configuration is SELECTED ON TEST DATA (--metric {metric}): its {metric} "
                        f"is an optimistic estimate, not a held-out result.")
    elif metric.startswith("train/"):
        warnings.append(f"The best configuration is selected on training data (--metric {metric}): it says "
                        f"how well a configuration fits, not how well it generalises.")
    sign = -1 if maximize else 1
    ranked = sorted(scored, key=lambda c: sign * c.stats(metric)[0])        # stable: sweep order on ties
    missing = {id(c): missing_replicates(c, expected) for c in configs}
    complete = [c for c in ranked if not missing[id(c)]]
    pool = complete or ranked
    best = pool[0]
    best_mean = best.stats(metric)[0]
    ties = [c for c in pool if c.stats(metric)[0] == best_mean]
    if len(ties) > 1:
        warnings.append(f"TIE: {len(ties)} configurations have exactly the same mean {metric} ({best_mean:#.4g}): "
                        + ", ".join(f"`{c.label}`" for c in ties) + f". The data do not choose between them; "
                        f"`{best.label}` is named first only because it comes first in the sweep.")
    better_incomplete = [c for c in ranked if missing[id(c)] and sign * c.stats(metric)[0] < sign * best_mean]
    if complete and better_incomplete:
        warnings.append("Not named best although their mean over the surviving replicates is better, since "
                        "a mean over survivors is biased: " + "; ".join(
                            f"`{c.label}` (missing {', '.join(missing[id(c)])})" for c in better_incomplete) + ".")
    if not complete:
        warnings.append(f"Every configuration is missing replicates: the best, `{best.label}`, is a mean over "
                        f"its survivors (missing {', '.join(missing[id(best)])}).")
    rows = []
    for i, c in enumerate(ranked, 1):
        row = Row(c, i, missing[id(c)])
        if c is best:
            row.tied = True
        else:
            row.p, row.test = compare(best, c, metric)
            row.tied = row.p is None or row.p >= ALPHA
        rows.append(row)
    rows += [Row(c, None, missing[id(c)]) for c in configs if c not in ranked]
    return Selection(metric, maximize, best, warnings, on_test, rows, ties if len(ties) > 1 else [])


# ---------------------------------------------------------------- what the jobs share

def _distinct(jobs: list[Job], key: str) -> list[Any]:
    return list(dict.fromkeys(j.summary.get(key) for j in jobs if j.summary and j.summary.get(key) is not None))


def split_sizes(jobs: list[Job]) -> dict[str, list[int]]:
    """{'train'|'val'|'test': the distinct sizes} recorded in the jobs' summary.json (data/*_size)."""
    return {split: sorted({int(v) for v in _distinct(jobs, f"data/{split}_size")}) for split in ("train", "val", "test")}


def _sizes(values: list[int]) -> str:
    return "not recorded" if not values else str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]} (jobs differ)"


def provenance(jobs: list[Job]) -> tuple[list[str], list[str]]:
    """(lines, warnings) on the odex version and git commit the jobs ran."""
    versions, commits = _distinct(jobs, "odex/version"), _distinct(jobs, "odex/git_commit")
    dirty = [j for j in jobs if (j.summary or {}).get("odex/git_dirty")]
    lines = [f"odex version: {', '.join(map(str, versions)) or 'not recorded'}",
             f"git commit: {', '.join(str(c)[:12] for c in commits) or 'not recorded (not run from a git checkout)'}"
             + (f" (uncommitted changes in {len(dirty)} of {len(jobs)} jobs)" if dirty else "")]
    warnings = []
    if len(commits) > 1 or len(versions) > 1:
        warnings.append(f"The jobs ran different code: {len(commits)} git commits ({', '.join(str(c)[:12] for c in commits)})"
                        f", odex versions {', '.join(map(str, versions))}: differences between configurations "
                        f"may come from the code.")
    if dirty:
        warnings.append(f"{len(dirty)} of {len(jobs)} jobs ran from a checkout with uncommitted changes: the commit "
                        f"does not say exactly what ran.")
    return lines, warnings


def rerun_command(jobs: list[Job], best: Config, replicate: str) -> str:
    """`odex-train -m <held fixed> <the best's values> <replicate>=<its values>`, shell-quoted."""
    fixed = held_fixed(jobs)
    values = [f"{k}={v}" for k, v in best.values]
    reps = expected_replicates(best.jobs, replicate)
    parts = [*fixed, *values] + ([f"{replicate}={','.join(reps)}"] if reps else [])
    multi = len(reps) > 1 or any(o.split("=", 1)[0] == "sweep" for o in fixed)
    return " ".join(["odex-train", *(["-m"] if multi else []), *map(shlex.quote, parts)])


def check_usage(jobs: list[Job], metric: str | None, replicate: str | None, epoch: str) -> None:
    """A `--metric` or `--replicate` that no job has, or `--epoch best` without a validation metric:
    one line naming what exists (UsageError, exit status 2)."""
    recorded = sorted(set().union(*(j.keys() for j in jobs)))
    if metric is not None and metric not in recorded:
        near = difflib.get_close_matches(metric, recorded, n=1)
        hint = " (did you mean " + near[0] + "?)" if near else ""
        no_val = "" if any(k.startswith("val/") for k in recorded) or not metric.startswith("val/") else \
            " no job has a validation split (add dataset.val_fraction);"
        raise UsageError(f"--metric={metric}: no job recorded it{hint};{no_val} metrics: {', '.join(recorded)}")
    if replicate is not None:
        keys = list(dict.fromkeys(split_override(o)[0] for j in jobs for o in j.overrides))
        if replicate not in keys:
            near = difflib.get_close_matches(replicate, keys, n=1)
            hint = " (did you mean " + near[0] + "?)" if near else ""
            raise UsageError(f"--replicate={replicate}: no job has this override{hint}; overrides: {', '.join(keys)}")
    if epoch == "best" and not any(k.startswith("val/") for k in recorded):
        raise UsageError("--epoch=best: picks each job's epoch on a validation metric and no job recorded one "
                         "(add dataset.val_fraction); allowed: last")


# ---------------------------------------------------------------- tables

def _pm(mean: float | None, std: float | None, n: int, digits: int = 4) -> str:
    if mean is None:
        return ""
    return f"{mean:#.{digits}g}" + (f" ± {std:.2g}" if std is not None else "") + f" (n={n})"


def _ci(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f"[{ci[0]:#.4g}, {ci[1]:#.4g}]"


def _fmt(v: float | None, digits: int | None = None) -> str:
    """A number for a table: `digits` significant figures, or in full (repr) for the CSV files."""
    return "" if v is None else repr(v) if digits is None else f"{v:#.{digits}g}"


def _vs_best(row: Row, best: Config | None) -> str:
    if row.rank is None:
        return ""
    if row.config is best:
        return "best"
    if row.p is None:
        return f"tied ({row.test})"
    return f"{'tied' if row.tied else 'worse'} (p={row.p:.2g}, {row.test.split(' (')[0]})"


def write_csv(configs: list[Config], metrics: list[str], sel: Selection, path: Path) -> None:
    """One row per configuration: rank, swept values, job counts by kind, missing replicates,
    `<metric> mean/std/n/ci95_low/ci95_high`, the test against the best."""
    keys = list(dict.fromkeys(k for c in configs for k, _ in c.values))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "configuration", *keys, "jobs", *KINDS, "missing_replicates", "shared_machine",
                    *[f"{m} {s}" for m in metrics for s in ("mean", "std", "n", "ci95_low", "ci95_high")],
                    f"p_vs_best ({sel.metric})", "test_vs_best", "tied_with_best", "job_folders"])
        for c in configs:
            vals = dict(c.values)
            r = sel.row(c)
            row = [r.rank or "", c.label, *(vals.get(k, "") for k in keys), len(c.jobs),
                   *(c.count(k) for k in KINDS), " ".join(r.missing),
                   sum(bool(j.shared_with) for j in c.jobs)]
            for m in metrics:
                mean, std, n = c.stats(m)
                ci = c.interval(m)
                row += [_fmt(mean), _fmt(std), n, _fmt(ci[0] if ci else None), _fmt(ci[1] if ci else None)]
            row += [_fmt(r.p), r.test, r.tied if r.rank else ""]
            w.writerow([*row, " ".join(j.name for j in c.jobs)])


def write_jobs_csv(jobs: list[Job], metrics: list[str], path: Path) -> None:
    axes = varying_keys(jobs)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["job", *axes, "kind", "status", *metrics, "epochs", "epoch_read", "shared_machine_with",
                    "problems", "overrides", "folder"])
        for j in jobs:
            w.writerow([j.name, *(j.override(a) or "" for a in axes), j.kind, j.status,
                        *(_fmt(j.value(m)) for m in metrics), len(j.rows), (j.row or {}).get("epoch", "last"),
                        " ".join(j.shared_with), "; ".join(j.problems), " ".join(j.overrides), str(j.folder)])


def _md_cell(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    return ("| " + " | ".join(map(_md_cell, header)) + " |\n|" + "---|" * len(header) + "\n"
            + "".join("| " + " | ".join(map(_md_cell, r)) + " |\n" for r in rows))


def counts(jobs: list[Job]) -> str:
    """'18 jobs: 12 completed, 4 diverged, 1 pruned, 1 failed'."""
    return f"{len(jobs)} jobs: " + ", ".join(f"{sum(j.kind == k for j in jobs)} {k}" for k in KINDS)


def warnings_of(jobs: list[Job], sel: Selection, replicate: str) -> list[str]:
    out = list(sel.warnings)
    bad = [j for j in jobs if not j.completed]
    if bad:
        out.append(f"{len(bad)} of {len(jobs)} jobs did not complete ({tally(bad)}); they are listed below "
                   "and left out of every mean.")
    incomplete = [r for r in sel.rows if r.missing and any(j.completed for j in r.config.jobs)]
    if incomplete:
        out.append(f"{len(incomplete)} configurations are missing replicates (flagged `missing` in the ranking); "
                   f"their means are over the surviving replicates only.")
    torn = [j for j in jobs if j.problems and not j.unreadable]
    if torn:
        out.append(f"{len(torn)} of {len(jobs)} jobs have damaged files (listed below).")
    if replicate not in varying_keys(jobs):
        out.append(f"The replicate key {replicate} is not swept: every configuration has n=1 (no spread, no "
                   f"interval, no test); sweep it (e.g. {replicate}=0,1,2) or name another with --replicate.")
    shared = [j for j in jobs if j.shared_with]
    if shared:
        out.append(f"{len(shared)} of {len(jobs)} jobs ran side by side with others (overlapping wall-clock, "
                   f"marked {SHARED_MARK}): their times include sharing the machine.")
    out += provenance(jobs)[1]
    return out


def decision(jobs: list[Job], sel: Selection, replicate: str) -> list[str]:
    """The decision's lines, for report.md and the console."""
    out = [sel.line()]
    if sel.best is None:
        return out
    if sel.metric != "test/acc":
        mean, std, n = sel.best.stats("test/acc")
        if n:
            ci = sel.best.interval("test/acc")
            out.append(f"Its test/acc: {_pm(mean, std, n)}" + (f", 95% interval {_ci(ci)}" if ci else "") + ".")
    tied = [r for r in sel.rows if r.tied and r.config is not sel.best and r.rank]
    test = (f"two-sided t-test at {ALPHA:g} on {sel.metric} over {replicate}: paired where both completed the same "
            f"replicates, Welch's otherwise; n < 2 cannot be excluded")
    out.append(f"Not distinguishable from the best ({test}): "
               + ("; ".join(f"`{r.config.label}` ({_vs_best(r, sel.best)})" for r in tied) if tied else "none")
               + ".")
    sizes = split_sizes([j for j in jobs if j.completed] or jobs)
    line = (f"Split sizes: validation {_sizes(sizes['val'])}, test {_sizes(sizes['test'])}, "
            f"training {_sizes(sizes['train'])} examples")
    mean = sel.best.stats(sel.metric)[0]
    split = {"val": sizes["val"], "test": sizes["test"]}.get(sel.metric.split("/")[0])
    if sel.metric.endswith("/acc") and split and len(split) == 1 and split[0] > 0 and mean is not None:
        se = math.sqrt(max(mean * (1 - mean), 0.0) / split[0])
        line += (f"; one example is {1 / split[0]:.2g} of {sel.metric}, and one accuracy's binomial standard "
                 f"error at {mean:.3g} is {se:.2g}")
    out.append(line + ".")
    out.append(f"Values read at {sel.epoch}.")
    return out


def markdown(sweep_dir: Path, jobs: list[Job], configs: list[Config], metrics: list[str], sel: Selection,
             replicate: str, plots: list[str], notes: list[str], extra: list[str] = ()) -> str:
    out = io.StringIO()
    out.write(f"# Sweep report: {sweep_dir}\n\n"
              + "".join(f"**Warning:** {w}\n\n" for w in warnings_of(jobs, sel, replicate)))
    out.write(f"{counts(jobs)}, in {len(configs)} configurations; replicate key `{replicate}`. Values: mean ± "
              f"sample standard deviation (n = completed replicates), [95% t-interval for the mean, clipped to the "
              f"metric's range].\n\n")
    out.write("## Decision\n\n" + "".join(f"- {line}\n" for line in decision(jobs, sel, replicate)) + "\n")
    fixed = held_fixed(jobs)
    out.write("## What ran\n\n" + "".join(f"- {line}\n" for line in provenance(jobs)[0]))
    out.write("- held fixed in every job: " + (" ".join(f"`{o}`" for o in fixed) if fixed else "(no common overrides)")
              + "\n")
    if sel.best is not None:
        out.write(f"- rerun the best ({sel.where}):\n\n      {rerun_command(jobs, sel.best, replicate)}\n")
    out.write("".join(f"- {line}\n" for line in extra))
    out.write(f"\n## Configurations, ranked by mean {sel.metric} ({sel.where})\n\n" if sel.best is not None
              else "\n## Configurations (no best named: not ranked)\n\n")
    first = [sel.metric] if sel.best is not None else []
    header = ["rank", "configuration", "replicates", *KINDS[1:], *(f"{m} (95% interval)" for m in first),
              "vs best", *(m for m in metrics if m not in first)]
    rows = []
    for r in sel.rows:
        c = r.config
        reps = f"{len(c.completed)}/{len(c.jobs)}" + (f" missing {', '.join(r.missing)}" if r.missing else "")
        rows.append([r.rank or "-", c.label + (f" {SHARED_MARK}" if c.shared else ""), reps,
                     *(c.count(k) for k in KINDS[1:]),
                     *(f"{_pm(*c.stats(m))} {_ci(c.interval(m))}".strip() for m in first), _vs_best(r, sel.best),
                     *(_pm(*c.stats(m)) for m in metrics if m not in first)])
    out.write(_md_table(header, rows))
    bad = [j for j in jobs if not j.completed or j.problems]
    if bad:
        out.write("\n## Diverged, pruned, failed, unfinished or damaged jobs\n\n")
        for j in bad:
            problems = "" if j.unreadable or not j.problems else f" ({'; '.join(j.problems)})"
            status = j.status if j.status.startswith(j.kind) else f"{j.kind}: {j.status}"
            out.write(f"- job {j.name} (`{' '.join(j.overrides)}`): {_md_cell(status)}{problems} -- {j.folder}\n")
    out.write("\n## Jobs\n\n")
    axes = varying_keys(jobs)
    header = ["job", *axes, "status", *metrics, "epochs", "epoch read", "shared machine with"]
    rows = []
    for j in jobs:
        rows.append([j.name, *(j.override(a) or "" for a in axes), j.status, *(_fmt(j.value(m), 4) for m in metrics),
                     len(j.rows), (j.row or {}).get("epoch", "last"), ", ".join(j.shared_with)])
    out.write(_md_table(header, rows))
    if plots or notes:
        out.write("\n## Plots\n\n" + "".join(f"- {n}\n" for n in notes) + "\n"
                  + "".join(f"![{p}]({p})\n\n" for p in plots))
    return out.getvalue()


def report(sweep_dir: str | Path, out: str | Path | None = None, metric: str | None = None,
           maximize: bool = True, plots: bool = True, replicate: str | None = None, epoch: str = "last",
           wandb: bool = True) -> dict[str, Any]:
    """Write the report; returns {'jobs', 'configs', 'selection', 'best', 'metric', 'warnings',
    'notes', 'out', 'files', 'wandb_run'}. `replicate=None`: trainer.seed, not checked against
    the jobs (a named one must exist)."""
    sweep_dir = Path(sweep_dir)
    if epoch not in EPOCHS:
        raise UsageError(f"--epoch={epoch}: allowed: {', '.join(EPOCHS)}")
    jobs = collect(sweep_dir)
    if not jobs:
        raise ReportError(f"no sweep jobs (folders with .hydra/overrides.yaml) under {sweep_dir}")
    check_usage(jobs, metric, replicate, epoch)
    replicate = replicate or DEFAULT_REPLICATE
    epoch_line = pick_epochs(jobs, epoch, metric or DEFAULT_METRIC, maximize)
    configs = configurations(jobs, replicate)
    sel = select(configs, metric, maximize, expected_replicates(jobs, replicate))
    sel.epoch = epoch_line
    metrics = [m for m in METRIC_COLUMNS if any(j.value(m) is not None for j in jobs if j.completed)]
    if sel.metric not in metrics and sel.best is not None:
        metrics.insert(0, sel.metric)
    out = Path(out) if out is not None else sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    if plots:
        from odex.sweep.report_plots import make_plots
        made, notes = make_plots(configs, sel, out)
    else:
        made, notes = [], []
    pngs = [p for p in made if p.endswith(".png")]
    write_csv(configs, metrics, sel, out / "report.csv")
    write_jobs_csv(jobs, metrics, out / "jobs.csv")
    wandb_run, run_note = None, []
    if wandb:
        from odex.tracking.report_run import log_report
        wandb_run, run_note = log_report(jobs, out, pngs, counts(jobs), decision(jobs, sel, replicate))
    (out / "report.md").write_text(markdown(sweep_dir, jobs, configs, metrics, sel, replicate, pngs, notes,
                                            run_note))
    return {"jobs": jobs, "configs": configs, "selection": sel, "best": sel.best, "metric": sel.metric,
            "warnings": warnings_of(jobs, sel, replicate), "notes": notes, "out": out,
            "files": ["report.md", "report.csv", "jobs.csv", *made], "wandb_run": wandb_run}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="odex-report", description=__doc__.split("\n")[0])
    p.add_argument("sweep_dir", help="a multirun folder (hydra.sweep.dir)")
    p.add_argument("--out", default=None, help="where to write (default: <sweep_dir>/report)")
    p.add_argument("--metric", default=None,
                   help="what 'best' means (default: val/acc; a test or training metric only when named, and labelled)")
    p.add_argument("--minimize", action="store_true", help="lower is better (for a loss)")
    p.add_argument("--replicate", default=None, metavar="KEY",
                   help=f"the override whose values are replicates of one configuration (default {DEFAULT_REPLICATE})")
    p.add_argument("--epoch", default="last", choices=EPOCHS,
                   help="read each job's last epoch (default) or its best epoch on validation")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-wandb", action="store_true", help="no W&B run for the report (default: one, offline, "
                   "in the sweep's group, when the jobs logged to W&B)")
    args = p.parse_args(argv)
    try:
        r = report(args.sweep_dir, args.out, args.metric, not args.minimize, not args.no_plots, args.replicate,
                   args.epoch, not args.no_wandb)
    except OdexError as e:
        print(f"odex: error: {e}", file=sys.stderr)
        return 2
    for w in r["warnings"]:
        print(f"odex-report: warning: {w.replace('`', '')}")
    jobs, configs = r["jobs"], r["configs"]
    print(f"{counts(jobs)}, in {len(configs)} configurations")
    replicate = args.replicate or DEFAULT_REPLICATE
    print("\n".join(decision(jobs, r["selection"], replicate)).replace("`", ""))
    print("\n".join(provenance(jobs)[0]))
    print("held fixed in every job: " + (" ".join(held_fixed(jobs)) or "(no common overrides)"))
    if r["best"] is not None:
        print(f"rerun the best ({r['selection'].where}): {rerun_command(jobs, r['best'], replicate)}")
    for j in jobs:
        if not j.completed or j.problems:
            damage = "" if j.unreadable or not j.problems else f" ({'; '.join(j.problems)})"
            print(f"  job {j.name}: {j.status}{damage}")
    print(f"report: {r['out'] / 'report.md'} ({', '.join(r['files'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
