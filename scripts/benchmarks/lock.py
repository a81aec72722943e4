"""How soon a second odex-train on a folder in use stops: the seconds from starting the command to
its exit with `odex: error: <folder> is in use ...`, with this process holding the folder's lock.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench.py lock [--repeat 5]

Writes a temporary folder only; prints one row per try and the median. Figures: docs/run_safety.md."""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import command, median, report, table
from odex.training.resume import RunLock

TINY = ["dataset.limit_train=256", "dataset.limit_test=128", "trainer.max_epochs=1", "trainer.progress=false",
        "model.channels=8", "model.hidden=16", "solver=euler", "logger=none"]


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(prog="scripts/bench.py lock", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    train = shutil.which("odex-train", path=str(Path(sys.executable).parent)) or "odex-train"
    rows = []
    with tempfile.TemporaryDirectory() as tmp, RunLock(Path(tmp) / "run"):
        for _ in range(args.repeat):
            t0 = time.monotonic()
            p = subprocess.run([train, f"hydra.run.dir={Path(tmp) / 'run'}", *TINY], capture_output=True, text=True)
            rows.append([f"{time.monotonic() - t0:.2f}", p.returncode, p.stderr.strip()[:70]])
    report(command("lock", argv),
           table(["s to exit", "exit", "message"], rows) + f"\nmedian {median(float(r[0]) for r in rows):.2f} s\n")
    return rows
