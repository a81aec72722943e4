"""One sweep grid run under several settings, one sweep after another: wall-clock, where the jobs'
time went, and whether the settings change the answer.

Settings: `off` / `on` (run health and pruning off, `trainer.health.enabled=false`, and on, the
default health and `callbacks=[prune]`: what they save on a grid with a too-large learning rate,
by default 18 digits jobs, lr 0.1 / 0.01 / 0.001 x batch 32 / 128 x 3 seeds, 10% validation
split, 3 epochs), `sequential` / `joblib3` (the jobs one after another, or 3 at once sharing one
GPU with hydra/launcher=shared_gpu). Run in the order given (alternate it between runs: the
machine's load drifts). Per sweep: wall-clock, its ratio to the first, jobs completed / diverged /
pruned / failed, the share of job time on stopped jobs, the worst train/loss and NFE growth of a
completed job over its first epoch, and the best configuration by odex-report's own selection
(odex.sweep.report.configurations / select, val/acc over seed means).

    OMP_NUM_THREADS=1 python scripts/bench.py sweeps --order off on --root /tmp/bench_health \\
        --out docs/bench_sweep_health
    python scripts/bench.py sweeps --order sequential joblib3 --grid sweep=lr_bs_grid dataset=mnist_t10k \\
        dataset.root=/tmp/mn --root /tmp/grid_timing --out /tmp/grid_timing/result    # the GPU check
    python scripts/bench.py sweeps --grid optim.lr=1e-1,1e-3 trainer.seed=0,1 \\
        dataset.val_fraction=0.1 trainer.max_epochs=2 --root /tmp/b --out /tmp/b/result    # a quick look

(/tmp/mn holds MNIST/raw/t10k-*.) <out>.json holds every job; <out>.md the table.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import command, report, table
from odex.sweep.report import collect, configurations, select

GRID = ["optim.lr=1e-1,1e-2,1e-3", "dataset.batch_size=32,128", "trainer.seed=0,1,2",
        "dataset.val_fraction=0.1", "trainer.max_epochs=3"]
SETTINGS = {"off": ["trainer.health.enabled=false"], "on": ["callbacks=[prune]"],
            "sequential": [], "joblib3": ["hydra/launcher=shared_gpu", "hydra.launcher.n_jobs=3"]}
STOPPED = ("diverged", "pruned", "failed")


def job_seconds(job) -> float:
    s = job.summary or {}
    start, end = s.get("time/start_unix"), s.get("time/end_unix")
    return float(end - start) if start is not None and end is not None else 0.0


def growth(job) -> dict[str, float | None]:
    """Worst epoch's train/loss and forward NFE per batch over the first epoch's."""
    out: dict[str, float | None] = {}
    for key in ("train/loss", "nfe/forward"):
        series = job.series(key)
        first = series.get(1)
        out[key] = (max(series.values()) / first) if series and first else None
    return out


def run_sweep(name: str, root: Path, grid: list[str], extra: list[str]) -> dict:
    sweep_dir = root / name
    cmd = [sys.executable, "-m", "odex.train", "-m", *grid, *SETTINGS[name], *extra,
           f"hydra.sweep.dir={sweep_dir}", "trainer.progress=false"]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    (root / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if not sweep_dir.is_dir():
        sys.exit(f"sweep {name} started no job (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
    jobs = collect(sweep_dir)
    seconds = {j.name: job_seconds(j) for j in jobs}
    total = sum(seconds.values()) or 1.0
    kinds = {k: [j for j in jobs if j.status.startswith(k)] for k in STOPPED}
    configs = configurations(jobs)
    sel = select(configs, None)
    best = None
    if sel.best is not None:
        mean, std, n = sel.best.stats(sel.metric)
        best = {"label": sel.best.label, "mean": mean, "std": std, "n": n}
    completed = [j for j in jobs if j.completed]
    grow = [growth(j) for j in completed]
    return {
        "name": name, "command": " ".join(cmd[1:]), "exit_status": proc.returncode, "wall_s": wall,
        "jobs": len(jobs), "completed": len(completed),
        **{k: len(v) for k, v in kinds.items()},
        "stopped_share": sum(seconds[j.name] for v in kinds.values() for j in v) / total,
        "job_seconds_total": total,
        "max_loss_growth_completed": max((g["train/loss"] for g in grow if g["train/loss"]), default=None),
        "max_nfe_growth_completed": max((g["nfe/forward"] for g in grow if g["nfe/forward"]), default=None),
        "best": best,
        "per_job": [{"job": j.name, "overrides": j.overrides, "status": j.status, "seconds": seconds[j.name],
                     "epochs": len(j.series("train/loss")), "val/acc": j.value("val/acc")} for j in jobs],
    }


def markdown(results: list[dict]) -> str:
    rows = []
    first = results[0]["wall_s"] if results else None
    for r in results:
        b = r["best"]
        best = "none" if b is None else (f"`{b['label']}` {b['mean']:.4f}"
                                         + (f" ± {b['std']:.4f}" if b["std"] is not None else "") + f", n={b['n']}")
        lg, ng = r["max_loss_growth_completed"], r["max_nfe_growth_completed"]
        rows.append([r["name"], f"{r['wall_s']:.0f}", f"{r['wall_s'] / first:.2f}x" if first else "-",
                     f"{r['completed']} / {r['diverged']} / {r['pruned']} / {r['failed']}",
                     f"{100 * r['stopped_share']:.0f}%",
                     f"{'-' if lg is None else f'{lg:.3g}x'} / {'-' if ng is None else f'{ng:.3g}x'}", best])
    return table(["grid", "wall-clock s", "ratio to first", "jobs completed / diverged / pruned / failed",
                  "share of job time on stopped jobs", "worst loss / NFE growth of a completed job",
                  "best (val/acc mean ± std, n)"], rows)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="scripts/bench.py sweeps", description=__doc__.split("\n\n")[0])
    ap.add_argument("--order", nargs="+", choices=sorted(SETTINGS), default=["off", "on"])
    ap.add_argument("--root", type=Path, required=True, help="folder for the sweeps (made; must not hold them)")
    ap.add_argument("--out", type=Path, required=True, help="<out>.json and <out>.md")
    ap.add_argument("--grid", nargs="+", default=GRID, help="the sweep's overrides (default: GRID)")
    ap.add_argument("--extra", nargs="*", default=[], help="overrides added to both sweeps")
    args = ap.parse_args(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.order:
        if (args.root / name).exists():
            sys.exit(f"{args.root / name} exists: give another --root")
        results.append(run_sweep(name, args.root, args.grid, args.extra))
        print(markdown(results), file=sys.stderr, flush=True)
    result = {"grid": args.grid, "extra": args.extra, "order": args.order, "results": results}
    report(command("sweeps", argv), markdown(results), args.out, result)
    return result
