"""A table of finished odex runs from their summary.json: the momentum-model papers' comparison,
the GPU session's summaries, LyaNet against backprop.

    python scripts/bench.py runs outputs/multirun/<date>/<time>   (a sweep folder, or run folders)
    python scripts/bench.py runs RUN... --keys status test/acc test/pgd_linf_acc time/total_s

One row per run (sweep jobs in numeric order): a label from its overrides (model=, grad=,
experiment=, trainer.seed=; else the folder's name) and each key of its summary.json (default: the
parameter count, final training loss, test accuracy, forward and backward NFE per batch).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from benchmarks.common import command, report, table

KEYS = ["status", "params", "train/loss", "test/acc", "nfe/forward", "nfe/backward", "epoch"]
LABEL = ("model=", "grad=", "experiment=", "trainer.seed=")


def runs(paths: list[str]) -> list[Path]:
    found = []
    for p in map(Path, paths):
        found += sorted((s.parent for s in p.rglob("summary.json")), key=_natural)
    return found


def _natural(path: Path) -> list[tuple[int, int | str]]:
    """Sweep job folders in numeric order (2 before 10)."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in path.parts]


def row(run: Path, keys: list[str]) -> list[str]:
    summary = json.loads((run / "summary.json").read_text())
    overrides_file = run / ".hydra" / "overrides.yaml"
    overrides = list(OmegaConf.load(overrides_file)) if overrides_file.exists() else []
    label = " ".join(o for o in overrides if o.startswith(LABEL)) or run.name
    return [label, *(f"{v:.4g}" if isinstance(v, float) else str(v) for v in map(summary.get, keys))]


def main(argv=None) -> list:
    ap = argparse.ArgumentParser(prog="scripts/bench.py runs", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", default=["."], help="run folders or folders holding them")
    ap.add_argument("--keys", nargs="+", default=KEYS, help="summary.json keys, one column each")
    ap.add_argument("--out", default=None, help="writes <out>.md")
    args = ap.parse_args(argv)
    rows = [row(r, args.keys) for r in runs(args.paths)]
    if not rows:
        sys.exit("no summary.json under the given folders")
    report(command("runs", sys.argv[2:] if argv is None else argv), table(["run", *args.keys], rows), args.out)
    return rows
