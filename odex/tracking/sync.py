"""`odex-sync <folder>`: upload every offline W&B run under a run or sweep folder.

odex keeps each run's W&B data in `<run>/wandb/`, below where `wandb sync` looks; this finds those
folders and hands them to the installed `wandb sync`. Design notes: docs/design-notes.md, "odex/tracking/sync.py".
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path


def offline_runs(folder: str | Path) -> list[Path]:
    """Every offline run folder (`wandb/offline-run-*` holding a `run-*.wandb` file) under `folder`,
    in path order; a run resumed after preemption has one folder per attempt, each listed."""
    folder = Path(folder)
    if folder.name.startswith("offline-run-") and any(folder.glob("run-*.wandb")):
        return [folder]                     # one run's own folder
    return sorted(p for p in folder.rglob("offline-run-*")
                  if p.is_dir() and p.parent.name == "wandb" and any(p.glob("run-*.wandb")))


def jobs_without_run(folder: str | Path) -> list[tuple[Path, str]]:
    """(job folder, its status) of every job under `folder` (a folder with Hydra's
    .hydra/overrides.yaml) that holds no offline W&B run: logged with logger=none, or killed
    before its logger started. The sweep is then not whole in the dashboard; odex-sync says so."""
    from odex.sweep.jobs import job_folders

    out = []
    for job in sorted(job_folders(folder)):
        if offline_runs(job):
            continue
        try:
            status = str(json.loads((job / "summary.json").read_text()).get("status", "unknown"))
        except (OSError, ValueError):
            status = "no readable summary.json"
        out.append((job, status))
    return out


def wandb_command() -> list[str]:
    """The `wandb` executable of this Python environment (next to sys.executable), else on PATH."""
    here = Path(sys.executable).parent / "wandb"
    if here.exists():
        return [str(here)]
    found = shutil.which("wandb")
    return [found] if found else [sys.executable, "-m", "wandb"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="odex-sync", description=__doc__.split("\n")[0],
                                epilog="Arguments after the folder that odex-sync does not know (-p PROJECT, "
                                       "-e ENTITY, --include-synced, ...) are passed to `wandb sync`.")
    p.add_argument("folder", help="a run folder or a sweep folder (anything with <job>/wandb/offline-run-* below)")
    p.add_argument("--dry-run", action="store_true", help="list the offline runs and the command; upload nothing")
    args, passthrough = p.parse_known_args(argv)
    folder = Path(args.folder)
    if not folder.is_dir():
        print(f"odex-sync: error: {folder} is not a folder", file=sys.stderr)
        return 2
    runs = offline_runs(folder)
    missing = jobs_without_run(folder)
    for job, status in missing:
        print(f"odex-sync: warning: job {job} has no W&B run (status: {status})", file=sys.stderr)
    if not runs:
        print(f"odex-sync: error: no offline W&B runs (wandb/offline-run-*) under {folder}", file=sys.stderr)
        return 2
    command = [*wandb_command(), "sync", *passthrough, *map(str, runs)]
    if args.dry_run:
        print(f"{len(runs)} offline runs under {folder}:")
        for r in runs:
            print(f"  {r}" + ("  (already synced)" if any(r.glob("run-*.wandb.synced")) else ""))
        if missing:
            print(f"{len(missing)} jobs without a W&B run (not uploaded: the sweep is not whole in W&B):")
            for job, status in missing:
                print(f"- {job} (status: {status})")
        print("would run: " + " ".join(command[:2 + len(passthrough)]) + " <the runs above>")
        return 0
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
