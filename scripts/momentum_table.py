"""The comparison table of the momentum-model papers from finished odex runs.

    python scripts/momentum_table.py outputs/multirun/<date>/<time>   (a sweep folder, or run folders)

One row per run: its overrides, parameter count, final training loss, test accuracy, and forward
and backward NFE per batch (last epoch), read from each run's summary.json and .hydra/overrides.yaml.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf


def runs(paths: list[str]) -> list[Path]:
    found = []
    for p in map(Path, paths):
        found += sorted((s.parent for s in p.rglob("summary.json")), key=_natural)
    return found


def _natural(path: Path) -> list[tuple[int, int | str]]:
    """Sweep job folders in numeric order (2 before 10)."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in path.parts]


def row(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    overrides_file = run / ".hydra" / "overrides.yaml"
    overrides = list(OmegaConf.load(overrides_file)) if overrides_file.exists() else []
    label = " ".join(o for o in overrides if o.startswith(("model=", "grad=", "trainer.seed="))) or run.name
    return {"run": label, "status": summary.get("status"), "params": summary.get("params"),
            "train/loss": summary.get("train/loss"), "test/acc": summary.get("test/acc"),
            "nfe/forward": summary.get("nfe/forward"), "nfe/backward": summary.get("nfe/backward"),
            "epochs": summary.get("epoch")}


def fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def main(argv: list[str]) -> None:
    rows = [row(r) for r in runs(argv or ["."])]
    if not rows:
        sys.exit("no summary.json under the given folders")
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(fmt(r[k]) for k in keys) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
