"""`trainer.resume`: what a run does when its folder already holds an earlier attempt
(never: start afresh; auto: continue from checkpoints/last.pt, skip a completed run; must: like
auto, no checkpoint is an error). Resuming with a different configuration is a `ConfigError`,
except for the keys in `IGNORED`. Design notes: docs/design-notes.md, "odex/training/resume.py".
"""
from __future__ import annotations

import errno
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odex.errors import ChangedFile, ConfigError, ReadOnlyFolder, RunBusy, RunStateError
from odex.training import atomic, checksum

log = logging.getLogger("odex")

# what the error messages say trainer.resume=never does with the earlier files
KEPT = "the earlier files are kept: a completed run where it is, anything else in attempt-N/"

# Dotted keys that may change between an attempt and its resumption: where the output goes and how
# it is shown, the device, and the length of the run (a finished run resumed with more epochs goes on).
IGNORED = ("logger", "trainer.resume", "trainer.progress", "trainer.device", "trainer.max_epochs",
           "trainer.eval_every", "dataset.root", "dataset.download",
           "trainer.health")       # when a run is stopped, never what it computes


def ignored(key: str) -> bool:
    """Whether the dotted `key` may change between an attempt and its resumption (IGNORED)."""
    return any(key == i or key.startswith(i + ".") for i in IGNORED)


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
    return {k: v for k, v in flat.items() if not ignored(k) and not k.startswith("hydra.")}


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
                                f"with trainer.resume=never ({KEPT})") from None
    return out


def trim_metrics(run_dir: str | Path, last_epoch: int) -> None:
    """Keep metrics.jsonl's rows up to `last_epoch` (0: none), so a resumed run appends each epoch
    once even when the attempt before it logged an epoch and died before checkpointing it. The
    kept lines are kept as written."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return
    lines = _metrics_lines(path)
    keep = [line for line, row in lines if row.get("epoch", 0) <= last_epoch]
    if len(keep) == len(lines) and path.read_text().endswith("\n"):
        return          # nothing to cut: the file is left as it is
    atomic.write_text(path, "".join(line + "\n" for line in keep))


@dataclass
class Previous:
    """What an earlier attempt in the run folder left: a checkpoint to continue from, or the
    summary of a run that already completed (then there is nothing to do)."""
    checkpoint: dict[str, Any] | None = None
    completed: dict[str, Any] | None = None
    earlier: bool = False         # the folder holds files of an earlier attempt
    elsewhere: Path | None = None  # trainer.resume=never on a completed run: the new attempt's folder


# what a run writes in its folder (an earlier attempt's files, when there are any)
RUN_FILES = ("summary.json", "metrics.jsonl", "error.log", "checkpoints", "wandb")


def holds_run(run_dir: str | Path) -> bool:
    run_dir = Path(run_dir)
    return any((run_dir / name).exists() for name in RUN_FILES)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        checksum.verify(path)        # changed bytes: one line naming the file
    except ChangedFile as e:
        raise ChangedFile(f"{e}; start afresh with trainer.resume=never ({KEPT}), or use another folder") from None
    import odex.training.checkpoint as ckpt

    try:
        return ckpt.load(path, verify=False)
    except Exception as e:  # noqa: BLE001 -- pickle, zip or I/O errors of a damaged file
        raise RunStateError(
            f"{path} cannot be read ({type(e).__name__}: {' '.join(str(e).split())[:120]}): start afresh with "
            f"trainer.resume=never ({KEPT}), or use another folder") from None


def _load_summary(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        raise RunStateError(f"{path} is not valid JSON: start afresh with trainer.resume=never ({KEPT}), "
                            "or use another folder") from None


def inspect(run_dir: str | Path, mode: str, config: dict[str, Any], max_epochs: int) -> Previous:
    """Look at the run folder and decide what to do, reading only: nothing is written, moved or
    deleted here (see `commit`), so a mistake found later leaves an earlier run as it was."""
    run_dir = Path(run_dir)
    path = checkpoint_path(run_dir)
    previous = Previous(earlier=holds_run(run_dir))
    if mode == "never":
        try:
            done = (_load_summary(run_dir / "summary.json") or {}).get("status") == "completed"
        except RunStateError:       # a torn summary is no completed run: moved aside like any other
            done = False
        if done:
            previous.elsewhere = next_attempt(run_dir)
        return previous
    summary = _load_summary(run_dir / "summary.json")
    if path.exists():
        state = _load_checkpoint(path)
        saved = state.get("config")
        if saved is not None and saved != fingerprint(config):
            raise ConfigError(
                f"{run_dir} holds a run with another configuration ({_differences(saved, fingerprint(config))}); "
                f"use a new folder, or trainer.resume=never to start afresh ({KEPT})")
        previous.checkpoint = state
    if (summary is not None and summary.get("status") == "completed"
            and summary.get("epochs", 0) >= max_epochs):
        previous.checkpoint, previous.completed = None, summary
        return previous
    if previous.checkpoint is None and mode == "must":
        raise ConfigError(f"trainer.resume=must: there is no checkpoint at {path}; use trainer.resume=auto")
    if previous.checkpoint is not None and (run_dir / "metrics.jsonl").exists():
        _metrics_lines(run_dir / "metrics.jsonl")       # a damaged file is found now, before anything is written
    return previous


def next_attempt(run_dir: Path) -> Path:
    """<run>/attempt-N/ for the first N not taken."""
    n = 1
    while (run_dir / f"attempt-{n}").exists():
        n += 1
    return run_dir / f"attempt-{n}"


def move_aside(run_dir: Path) -> Path:
    """Move an earlier attempt's files into attempt-N/ (the first free N)."""
    dest = next_attempt(run_dir)
    dest.mkdir()
    for child in sorted(run_dir.iterdir()):
        if child.name in (dest.name, LOCK_NAME) or child.name.startswith("attempt-"):
            continue
        os.replace(child, dest / child.name)
    return dest


def commit(run_dir: str | Path, previous: Previous) -> None:
    """Once the configuration and the data are known to be good: continue the earlier attempt
    (its metrics trimmed to the checkpoint), start in a new attempt-N/ beside a completed run
    (trainer.resume=never), or move an unfinished attempt aside into attempt-N/ and start afresh.
    A continued run's summary.json stays until the new one replaces it (atomically, at the end):
    a continuation that fails on a full disk leaves the earlier summary in place."""
    run_dir = Path(run_dir)
    if previous.checkpoint is not None:
        trim_metrics(run_dir, previous.checkpoint["epoch"])
        (run_dir / "error.log").unlink(missing_ok=True)
        return
    if previous.elsewhere is not None:
        atomic.makedirs(previous.elsewhere)
        log.warning("%s holds a completed run, kept as it is; trainer.resume=never: this attempt runs in %s",
                    run_dir, previous.elsewhere)
        return
    if previous.earlier:
        dest = move_aside(run_dir)
        log.warning("%s held an earlier attempt: moved to %s; starting afresh", run_dir, dest)


# ---------------------------------------------------------------------------------------------
# One process per run folder

LOCK_NAME = ".lock"


class RunLock:
    """An exclusive `fcntl` lock on <run>/.lock for the life of the run (shared within one process,
    dropped by the kernel however the process ends); a folder that cannot be written is locked
    read-only where it can be and `read_only` is true (docs/design-notes.md)."""

    _held: dict[str, list] = {}       # resolved folder -> [fd, count, read_only], this process's locks

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._key: str | None = None
        self.read_only = False

    @property
    def held(self) -> bool:
        return self._key is not None

    def _open(self) -> int | None:
        """A descriptor of the lock file; None for a read-only folder without one."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            return os.open(self.run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if e.errno in atomic.FULL:
                raise atomic.disk_full(self.run_dir, 4096, LOCK_NAME) from None
            if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            self.read_only = True
            if not self.run_dir.is_dir():
                raise ReadOnlyFolder(f"{self.run_dir}: cannot be created ({os.strerror(e.errno)}): "
                                     "use a folder odex may write") from None
            try:
                return os.open(self.run_dir / LOCK_NAME, os.O_RDONLY)
            except OSError:
                return None

    def __enter__(self) -> "RunLock":
        import fcntl

        key = str(self.run_dir.resolve())
        if key in RunLock._held:
            entry = RunLock._held[key]
            entry[1] += 1
            self._key, self.read_only = key, entry[2]
            return self
        fd = self._open()
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunBusy(f"{self.run_dir} is in use by another odex-train process (it holds "
                              f"{self.run_dir / LOCK_NAME}); wait for it, or use another folder") from None
        RunLock._held[key] = [fd, 1, self.read_only]
        self._key = key
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        if self._key is None:
            return
        entry = RunLock._held[self._key]
        entry[1] -= 1
        if entry[1] == 0:
            del RunLock._held[self._key]
            if entry[0] is not None:
                fcntl.flock(entry[0], fcntl.LOCK_UN)
                os.close(entry[0])
        self._key = None
