"""Stopping cleanly when the scheduler says so (SLURM preemption, a time limit, `kill`): SIGTERM,
SIGUSR1 and SIGUSR2 set a flag, read at each batch boundary (no GPU sync), where a checkpoint is
written and `Preempted` raised; a second signal stops at once. Design notes: docs/design-notes.md, "odex/training/signals.py".
"""
from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
import time
from contextlib import suppress
from typing import Any

from odex.errors import OdexError

# SIGUSR2 is submitit's default preemption/timeout signal (SUBMITIT_PREEMPT_SIGNAL changes it).
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGUSR1", "SIGUSR2") if hasattr(signal, n))


class Preempted(OdexError):
    """A stop signal arrived; a checkpoint was written and the run can be resumed."""


def _install(signals, handler) -> dict[int, Any]:
    """`handler` for `signals`; returns the handlers it replaced (none outside the main thread,
    where Python cannot install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, handler) for s in signals}


def _uninstall(previous: dict[int, Any]) -> None:
    for s, handler in previous.items():
        signal.signal(s, handler if handler is not None else signal.SIG_DFL)


class StopSignals:
    """Context manager that turns the stop signals into `requested` for the training loop.

    Outside the main thread it installs nothing and only serves as a flag that code may set with
    `request(signum)` (as the tests do).
    """

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS):
        self.signals = signals
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def request(self, signum: int, frame=None) -> None:
        """The handler: remember the first stop signal; the loop stops at the next batch boundary.
        A second one (from a running handler, not a test's direct call) stops now."""
        # Nothing else here: printing or logging from a handler can re-enter a stream the main
        # thread is writing (tqdm, logging) and fail; the loop reports the stop when it sees it.
        if self.signum is None:
            self.signum = signum
        elif frame is not None:
            raise Preempted(f"preempted ({self.name}, then {signal.Signals(signum).name} again before a batch "
                            "boundary): stopped at once; the last checkpoint is kept")

    def __enter__(self) -> "StopSignals":
        self._previous = _install(self.signals, self.request)
        return self

    def __exit__(self, *exc) -> None:
        _uninstall(self._previous)      # kept: hand_over passes the signal on to them

    def hand_over(self) -> None:
        """After the checkpoint: pass the signal on to whoever handled it before us (submitit requeues
        the job), else exit with 128 + signum (docs/design-notes.md)."""
        if self.signum is None:
            return
        previous = self._previous.get(self.signum)
        if callable(previous):
            previous(self.signum, None)
        sys.exit(128 + self.signum)


def _children_of(pid: int) -> list[int]:
    """Every descendant of `pid` (from /proc: Linux), nearest first."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parents.items() if pp in frontier]
        out += kids
        frontier = kids
    return out


def _rerun_command() -> str:
    """This multirun's command again, in its sweep folder (which finishes its unfinished jobs)."""
    from odex.sweep.callbacks import LAST_SWEEP      # the sweep folder, recorded when the multirun started

    folder = LAST_SWEEP.get("dir")
    if folder is None:
        return "the same command with the same hydra.sweep.dir"
    args = [a for a in sys.argv[1:] if not a.startswith("hydra.sweep.dir=")]
    return " ".join(shlex.quote(w) for w in ["odex-train", *args, f"hydra.sweep.dir={folder}"])


class SweepParentSignals:
    """In the process that runs a multirun: SIGTERM or SIGINT is sent on to every descendant (the
    launcher's workers, which checkpoint), waited for up to `grace_s`, the rest killed, and the
    process exits with 128 + the signal number (docs/design-notes.md)."""

    def __init__(self, grace_s: float = 30.0):
        self.grace_s = grace_s
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame) -> None:
        me = os.getpid()
        workers = _children_of(me)
        sent = signum if signum != signal.SIGINT else signal.SIGTERM
        for pid in workers:
            with suppress(ProcessLookupError):
                os.kill(pid, sent)
        # Wait while a process still handles the signal (a job checkpointing under StopSignals).
        # One that ignores it (loky's resource trackers) or has handled it and gone back to waiting
        # for work (an idle loky worker, whose job has stopped) will not exit by itself, so it is
        # not waited for: waiting for every process to end held each stop for the whole grace.
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline and any(_alive(p) and _signal_mask(p, "SigCgt", sent) for p in workers):
            time.sleep(0.1)
        for pid in workers + _children_of(me):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        print(f"odex: sweep stopped by {signal.Signals(signum).name}: its {len(workers)} worker processes "
              f"stopped; finish the unfinished jobs with: {_rerun_command()}", file=sys.stderr, flush=True)
        os._exit(128 + signum)

    def __enter__(self) -> "SweepParentSignals":
        self._previous = _install((signal.SIGTERM, signal.SIGINT), self._handle)
        return self

    def __exit__(self, *exc) -> None:
        _uninstall(self._previous)
        self._previous = {}


def _signal_mask(pid: int, mask: str, signum: int) -> bool:
    """Whether `signum` is set in process `pid`'s /proc status `mask` (SigCgt: it has a handler for
    it; SigIgn: it ignores it). False when the process is gone or the mask cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(mask + ":"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError):
        pass
    return False


def _alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by its parent, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
