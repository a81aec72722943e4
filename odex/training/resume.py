"""`trainer.resume`: what a run does when its folder already holds an earlier attempt.

    never  start afresh; an earlier attempt's files are moved into attempt-N/ first (never deleted)
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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import odex.training.checkpoint as ckpt
from odex.errors import ConfigError, RunBusy, RunStateError

log = logging.getLogger("odex")

MODES = ("never", "auto", "must")

# Dotted keys that may change between an attempt and its resumption: where the output goes and how
# it is shown, the device, and the length of the run (a finished run resumed with more epochs goes on).
IGNORED = ("logger", "trainer.resume", "trainer.progress", "trainer.device", "trainer.max_epochs",
           "trainer.eval_every", "dataset.root", "dataset.download",
           "trainer.health")       # when a run is stopped, never what it computes


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


def _metrics_lines(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """metrics.jsonl's lines with their rows. A torn last line (a kill in the middle of a write) is
    dropped; any other unreadable line is a `RunStateError` naming the file and the choices."""
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append((line, json.loads(line)))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                log.warning("%s: dropped a torn last line (the previous attempt was killed while writing it)", path)
                continue
            raise RunStateError(f"{path} line {i + 1} is not valid JSON: fix or remove that line, or start afresh "
                                "with trainer.resume=never (the old files are kept in attempt-N/)") from None
    return out


def read_metrics_rows(path: Path) -> list[dict[str, Any]]:
    return [row for _, row in _metrics_lines(path)]


def trim_metrics(run_dir: str | Path, last_epoch: int) -> None:
    """Keep metrics.jsonl's rows up to `last_epoch` (0: none), so a resumed run appends each epoch
    once even when the attempt before it logged an epoch and died before checkpointing it. The
    kept lines are kept as written."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return
    keep = [line for line, row in _metrics_lines(path) if row.get("epoch", 0) <= last_epoch]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    tmp.replace(path)


@dataclass
class Previous:
    """What an earlier attempt in the run folder left: a checkpoint to continue from, or the
    summary of a run that already completed (then there is nothing to do). `fresh`: start afresh,
    moving an earlier attempt aside (trainer.resume=never, or nothing to continue from)."""
    checkpoint: dict[str, Any] | None = None
    completed: dict[str, Any] | None = None
    earlier: bool = False         # the folder holds files of an earlier attempt


# what a run writes in its folder (an earlier attempt's files, when there are any)
RUN_FILES = ("summary.json", "metrics.jsonl", "error.log", "checkpoints", "wandb")


def holds_run(run_dir: str | Path) -> bool:
    run_dir = Path(run_dir)
    return any((run_dir / name).exists() for name in RUN_FILES)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return ckpt.load(path)
    except Exception as e:  # noqa: BLE001 -- pickle, zip or I/O errors of a damaged file
        raise RunStateError(
            f"{path} cannot be read ({type(e).__name__}: {' '.join(str(e).split())[:120]}): start afresh with "
            "trainer.resume=never (the old attempt is kept in attempt-N/), or use another folder") from None


def _load_summary(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        raise RunStateError(f"{path} is not valid JSON: start afresh with trainer.resume=never (the old "
                            "attempt is kept in attempt-N/), or use another folder") from None


def inspect(run_dir: str | Path, mode: str, config: dict[str, Any], max_epochs: int) -> Previous:
    """Look at the run folder and decide what to do, reading only: nothing is written, moved or
    deleted here (see `commit`), so a mistake found later leaves an earlier run as it was."""
    if mode not in MODES:
        raise ConfigError(f"trainer.resume={mode}: must be one of {', '.join(MODES)}")
    run_dir = Path(run_dir)
    path = checkpoint_path(run_dir)
    previous = Previous(earlier=holds_run(run_dir))
    if mode == "never":
        return previous
    summary = _load_summary(run_dir / "summary.json")
    if path.exists():
        state = _load_checkpoint(path)
        saved = state.get("config")
        if saved is not None:               # a run saved before a module moved names its old one
            from odex.config import current_config
            saved = current_config(saved)
        if saved is not None and saved != fingerprint(config):
            raise ConfigError(
                f"{run_dir} holds a run with another configuration ({_differences(saved, fingerprint(config))}); "
                "use a new folder, or trainer.resume=never to start afresh (the old attempt is kept in attempt-N/)")
        previous.checkpoint = state
    if (summary is not None and summary.get("status") == "completed"
            and summary.get("epochs", 0) >= max_epochs):
        previous.checkpoint, previous.completed = None, summary
        return previous
    if previous.checkpoint is None and mode == "must":
        raise ConfigError(f"trainer.resume=must: there is no checkpoint at {path}; use trainer.resume=auto")
    if previous.checkpoint is not None:
        metrics = run_dir / "metrics.jsonl"
        if metrics.exists():
            read_metrics_rows(metrics)      # a damaged file is found now, before anything is written
    return previous


def move_aside(run_dir: Path) -> Path:
    """Move an earlier attempt's files into attempt-N/ (the first free N)."""
    n = 1
    while (run_dir / f"attempt-{n}").exists():
        n += 1
    dest = run_dir / f"attempt-{n}"
    dest.mkdir()
    for child in sorted(run_dir.iterdir()):
        if child.name in (dest.name, LOCK_NAME) or child.name.startswith("attempt-"):
            continue
        os.replace(child, dest / child.name)
    return dest


def commit(run_dir: str | Path, previous: Previous) -> None:
    """Once the configuration and the data are known to be good: continue the earlier attempt
    (its metrics trimmed to the checkpoint), or move it aside into attempt-N/ and start afresh."""
    run_dir = Path(run_dir)
    if previous.checkpoint is not None:
        trim_metrics(run_dir, previous.checkpoint["epoch"])
        for stale in (run_dir / "summary.json", run_dir / "error.log"):
            stale.unlink(missing_ok=True)
        return
    if previous.earlier:
        dest = move_aside(run_dir)
        log.warning("%s held an earlier attempt: moved to %s; starting afresh", run_dir, dest)


def prepare(run_dir: str | Path, mode: str, config: dict[str, Any], max_epochs: int) -> Previous:
    """`inspect` then `commit` (for callers that have nothing to check in between)."""
    previous = inspect(run_dir, mode, config, max_epochs)
    if previous.completed is None:
        commit(run_dir, previous)
    return previous


# ---------------------------------------------------------------------------------------------
# One process per run folder

LOCK_NAME = ".lock"


class RunLock:
    """An exclusive `fcntl` lock on <run>/.lock for the life of the run: a second process pointed
    at the same folder stops at once with one line. The kernel drops the lock when the process
    ends, however it ends (kill -9 included), so a stale lock file never blocks a rerun."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        import fcntl

        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunBusy(f"{self.run_dir} is in use by another odex-train process (it holds {self.run_dir / LOCK_NAME}); "
                          "wait for it, or use another folder") from None
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
