"""A table of finished odex runs from their summary.json: the momentum-model papers' comparison,
the GPU session's summaries, LyaNet against backprop.

    python scripts/bench.py runs outputs/multirun/<date>/<time>   (a sweep folder, or run folders)
    python scripts/bench.py runs RUN... --keys status test/acc test/pgd_linf_acc time/total_s

One row per run (sweep jobs in numeric order): a label, the overrides in which the runs differ
(else the folder's name), and each key of its summary.json (default: the status, parameter count,
final training loss, test accuracy, forward and backward NFE per batch, epochs).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from benchmarks.common import command, report, table

KEYS = ["status", "params", "train/loss", "test/acc", "nfe/forward", "nfe/backward", "epoch"]


def runs(paths: list[str]) -> list[Path]:
    found = []
    for p in map(Path, paths):
        found += sorted((s.parent for s in p.rglob("summary.json")), key=_natural)
    return found


def _natural(path: Path) -> list[tuple[int, int | str]]:
    """Sweep job folders in numeric order (2 before 10)."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in path.parts]


def overrides(run: Path) -> list[str]:
    path = run / ".hydra" / "overrides.yaml"
    return list(OmegaConf.load(path)) if path.exists() else []


def row(run: Path, label: str, keys: list[str]) -> list[str]:
    summary = json.loads((run / "summary.json").read_text())
    return [label, *(f"{v:.4g}" if isinstance(v, float) else str(v) for v in map(summary.get, keys))]


def main(argv=None) -> list:
    ap = argparse.ArgumentParser(prog="scripts/bench.py runs", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", default=["."], help="run folders or folders holding them")
    ap.add_argument("--keys", nargs="+", default=KEYS, help="summary.json keys, one column each")
    ap.add_argument("--out", default=None, help="writes <out>.md")
    args = ap.parse_args(argv)
    found = runs(args.paths)
    if not found:
        sys.exit("no summary.json under the given folders")
    given = {r: overrides(r) for r in found}
    shared = set.intersection(*(set(o) for o in given.values()))
    rows = [row(r, " ".join(o for o in given[r] if o not in shared) or r.name, args.keys) for r in found]
    report(command("runs", argv), table(["run", *args.keys], rows), args.out)
    return rows
