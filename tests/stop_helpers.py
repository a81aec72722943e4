"""A trainer callback that sends this process a real stop signal at a chosen batch, once.

Used by the resume tests (in-process and through the CLI): the signal goes through the same
handler as a scheduler's would. `marker` makes it one-shot, so the resumed run, which must have
the same configuration, is not stopped again.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path


class SignalAt:
    def __init__(self, epoch: int, step: int, marker: str, signal_name: str = "SIGTERM"):
        self.epoch, self.step, self.marker = epoch, step, Path(marker)
        self.signum = getattr(signal, signal_name)
        self._seen = 0

    def on_epoch_start(self, epoch):
        self._seen = 0

    def on_step_end(self, epoch, step):
        self._seen += 1
        if epoch == self.epoch and self._seen == self.step and not self.marker.exists():
            self.marker.write_text("sent\n")
            os.kill(os.getpid(), self.signum)
