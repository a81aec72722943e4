"""Epoch time of odex-train's default model with `trainer.threads=auto` against `trainer.threads=1`,
on an idle machine and beside busy processes, side by side.

Each cell is a fresh `odex-train` process (one epoch; `time/epoch_s` from its metrics.jsonl). The
variants run in alternating order, `--rounds` times each, and the table gives each one's median and
its ratio to `threads=1` under the same load:

    auto                     trainer.threads=auto as odex-train ships it (OMP_WAIT_POLICY=PASSIVE)
    auto, OpenMP default     the same with torch loaded before odex's entry point, so OpenMP keeps
                             its default wait policy (its threads spin a while before they sleep):
                             odex-train before the passive policy
    1                        trainer.threads=1

"loaded" starts `--busy` processes that each spin one core for the whole measurement (the situation
of a shared machine: other jobs, a compile, a second training run).

    python scripts/bench.py threads --rounds 3 --busy 2 --out docs/bench/threads
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import command, median, metrics, report, side_by_side, table

ODEX_TRAIN = ["-m", "odex.train"]
# torch (and its OpenMP) loaded before odex's entry point can choose the wait policy
TORCH_FIRST = ["-c", "import sys, torch; from odex.train import main; sys.argv[0] = 'odex-train'; main()"]
VARIANTS = {
    "auto": (ODEX_TRAIN, ["trainer.threads=auto"]),
    "auto, OpenMP default": (TORCH_FIRST, ["trainer.threads=auto"]),
    "1": (ODEX_TRAIN, ["trainer.threads=1"]),
}
SPIN = "while True: pass"


def epoch_seconds(variant: str, overrides: list[str], folder: Path) -> float:
    entry, extra = VARIANTS[variant]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env["WANDB_MODE"] = "offline"
    run = folder / f"run-{len(list(folder.iterdir()))}"
    cmd = [sys.executable, *entry, f"hydra.run.dir={run}", "logger=none",
           "trainer.max_epochs=1", "trainer.progress=false", *extra, *overrides]
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    rows = metrics(run)
    return rows[-1]["time/epoch_s"]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="scripts/bench.py threads", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--busy", type=int, default=2, help="spinning processes in the loaded case")
    ap.add_argument("--loads", nargs="+", default=["idle", "loaded"], choices=["idle", "loaded"])
    ap.add_argument("--overrides", nargs="*", default=[], help="odex-train overrides for every run")
    ap.add_argument("--out", type=Path, help="writes <out>.json and <out>.md")
    args = ap.parse_args(argv)

    def measure(variant):
        seconds = epoch_seconds(variant, args.overrides, Path(tmp))
        print(f"{load:6s} {variant:20s} {seconds:8.2f} s", file=sys.stderr, flush=True)
        return seconds

    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for load in args.loads:
            busy = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(args.busy if load == "loaded" else 0)]
            try:
                results[load] = side_by_side(list(VARIANTS), args.rounds, measure)
            finally:
                for p in busy:
                    p.kill()
                    p.wait()

    rows = [[load, *(f"{median(t):.2f} s ({median(t) / median(times['1']):.2f})" for t in times.values())]
            for load, times in results.items()]
    meta = {"rounds": args.rounds, "busy": args.busy, "overrides": args.overrides, "cpus": os.cpu_count()}
    report(command("threads", argv),
           f"Median s per epoch (ratio to threads=1 under the same load), {args.rounds} alternating rounds, "
           "fresh process per cell.\n\n" + table(["load", *(f"threads={v}" for v in VARIANTS)], rows),
           args.out, {"meta": meta, "seconds": results})
    return results
