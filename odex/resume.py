"""`trainer.resume`: what a run does when its folder already holds an earlier attempt.

    never  start afresh (the folder's metrics, checkpoint and summary are replaced)
    auto   continue from checkpoints/last.pt when there is one; skip a run that already completed
           (its summary is kept); otherwise start afresh. The default: Hydra's run folders are new
           for every run, so only a rerun into the same folder (a requeued SLURM job, a multirun
           rerun with the same hydra.sweep.dir, an explicit hydra.run.dir) ever resumes.
    must   like auto, but a folder without a checkpoint is an error

A checkpoint remembers the configuration that made it; resuming with a different one (another
optim.lr in the same folder, say) is a `ConfigError`, since the result would match neither run.
Keys that do not change what is computed may differ: see `IGNORED`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import checkpoint as ckpt
from .errors import ConfigError

log = logging.getLogger("odex")

MODES = ("never", "auto", "must")

# Dotted keys that may change between an attempt and its resumption: where the output goes and how
# it is shown, the device, and the length of the run (a finished run resumed with more epochs goes on).
IGNORED = ("logger", "trainer.resume", "trainer.progress", "trainer.device", "trainer.max_epochs",
           "trainer.eval_every", "dataset.root", "dataset.download")


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints" / "last.pt"


def fingerprint(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration that determines the run's numbers, flattened to dotted keys."""
    flat: dict[str, Any] = {}

    def walk(node, prefix):
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            flat[prefix[:-1]] = node

    walk(config, "")
    return {k: v for k, v in flat.items()
            if not any(k == i or k.startswith(i + ".") for i in IGNORED) and not k.startswith("hydra.")}


def _differences(old: dict, new: dict, limit: int = 3) -> str:
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k, "<absent>") != new.get(k, "<absent>"))
    shown = ", ".join(f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}" for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def trim_metrics(run_dir: str | Path, last_epoch: int) -> None:
    """Keep metrics.jsonl's rows up to `last_epoch` (0: none), so a resumed run appends each epoch
    once even when the attempt before it logged an epoch and died before checkpointing it."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("epoch", 0) <= last_epoch]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    tmp.replace(path)


@dataclass
class Previous:
    """What an earlier attempt in the run folder left: a checkpoint to continue from, or the
    summary of a run that already completed (then there is nothing to do)."""
    checkpoint: dict[str, Any] | None = None
    completed: dict[str, Any] | None = None


def prepare(run_dir: str | Path, mode: str, config: dict[str, Any], max_epochs: int) -> Previous:
    """Look at the run folder, apply `mode`, and clear what the new attempt will write again."""
    if mode not in MODES:
        raise ConfigError(f"trainer.resume must be one of {', '.join(MODES)}, got {mode!r}")
    run_dir = Path(run_dir)
    path = checkpoint_path(run_dir)
    summary_path = run_dir / "summary.json"
    previous = Previous()
    if mode != "never":
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
        if path.exists():
            state = ckpt.load(path)
            saved = state.get("config")
            if saved is not None and saved != fingerprint(config):
                raise ConfigError(
                    f"{run_dir} holds a run with another configuration ({_differences(saved, fingerprint(config))}); "
                    "use a new folder, or trainer.resume=never to overwrite it")
            previous.checkpoint = state
        if (summary is not None and summary.get("status") == "completed"
                and summary.get("epochs", 0) >= max_epochs):
            previous.checkpoint, previous.completed = None, summary
            return previous
        if previous.checkpoint is None and mode == "must":
            raise ConfigError(f"trainer.resume=must but there is no checkpoint at {path}")
    elif path.exists() or summary_path.exists():
        log.warning("trainer.resume=never: replacing the earlier run in %s", run_dir)
    start = previous.checkpoint["epoch"] if previous.checkpoint is not None else 0
    trim_metrics(run_dir, start)
    for stale in (summary_path, run_dir / "error.log"):
        stale.unlink(missing_ok=True)
    if previous.checkpoint is None:
        path.unlink(missing_ok=True)
    return previous
