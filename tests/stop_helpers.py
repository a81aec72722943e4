"""A trainer callback that sends this process a real stop signal at a chosen batch, once.

Used by the resume tests (in-process and through the CLI): the signal goes through the same
handler as a scheduler's would. `marker` makes it one-shot, so the resumed run, which must have
the same configuration, is not stopped again; `job` limits it to one job of a multirun.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path


class SignalAt:
    def __init__(self, epoch: int, step: int, marker: str, signal_name: str = "SIGTERM",
                 job: int | None = None):
        self.epoch, self.step, self.marker, self.job = epoch, step, Path(marker), job
        self.signum = getattr(signal, signal_name)
        self._seen = 0

    def _this_job(self) -> bool:
        if self.job is None:
            return True
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().job.num == self.job

    def on_epoch_start(self, epoch):
        self._seen = 0

    def on_step_end(self, epoch, step):
        self._seen += 1
        if epoch == self.epoch and self._seen == self.step and not self.marker.exists() and self._this_job():
            self.marker.write_text("sent\n")
            os.kill(os.getpid(), self.signum)
