"""Run health: stop a run that cannot recover, within the epoch, with status `diverged: <reason>`
(loss not finite or far above its start, NFE far above its early level, solver gave up, epoch over
budget), reading the device's running sums only a few times per epoch. The defaults never stop a
healthy run. Design notes: docs/design-notes.md, "odex/training/health.py".
"""
from __future__ import annotations

import logging
import math
import time

import torch
from torch import nn

from odex.errors import Diverged
from odex.ode.nfe import total_nfe

log = logging.getLogger("odex")

HINT = "try a lower optim.lr or trainer.grad_clip; limits: trainer.health"


class RunHealth:
    def __init__(self, enabled: bool = True, checks_per_epoch: int = 8, check_every_s: float = 10.0,
                 loss_factor: float = 100.0, nfe_factor: float = 10.0, epoch_budget_s: float | None = None):
        self.enabled = enabled
        self.checks_per_epoch, self.check_every_s = checks_per_epoch, check_every_s
        self.loss_factor, self.nfe_factor, self.epoch_budget_s = loss_factor, nfe_factor, epoch_budget_s
        self.loss_ref: float | None = None      # the run's early levels (docs/design-notes.md)
        self.nfe_ref: tuple[float, float] | None = None

    def start_epoch(self, epoch: int, n_batches: int, t0: float) -> None:
        self.epoch, self.n_batches, self.t0 = epoch, n_batches, t0
        self.every = max(1, math.ceil(n_batches / self.checks_per_epoch))
        self.last_t, self.last_k = time.perf_counter(), 0
        self.last_loss, self.last_n, self.last_nfe = 0.0, 0, (0.0, 0.0)

    def after_batch(self, k: int, loss_sum: torch.Tensor, n_seen: int, model: nn.Module) -> None:
        """After batch `k` (0-based) of the epoch. `loss_sum` (device) is the epoch's sum of
        loss x examples, `n_seen` its examples; the model's NFE counters are the epoch's too.
        Reads the device only when a look is due."""
        if not self.enabled:
            return
        now = time.perf_counter()
        done = k + 1
        if self.epoch_budget_s is not None and now - self.t0 > self.epoch_budget_s:
            raise Diverged(f"epoch {self.epoch} ran over trainer.health.epoch_budget_s={self.epoch_budget_s:g} "
                           f"({now - self.t0:.1f} s after batch {done}/{self.n_batches})")
        # the run's first batch is looked at on its own: its early level, before a too-large step
        # rate has had a chance to move the loss (lr=0.1 on digits: 6e4 over batches 2-6)
        if done % self.every and now - self.last_t < self.check_every_s and self.loss_ref is not None:
            return
        values = [loss_sum.detach().float().reshape(())]
        nfe = total_nfe(model)
        if nfe is not None:
            values += [nfe[0].float(), nfe[1].float()]
        host = torch.stack(values).tolist()       # the one device read of this look
        n = n_seen - self.last_n
        loss = (host[0] - self.last_loss) / max(n, 1)
        batches = max(done - self.last_k, 1)
        nfe_w = None if nfe is None else ((host[1] - self.last_nfe[0]) / batches,
                                          (host[2] - self.last_nfe[1]) / batches)
        span = f"batch {done}" if done == self.last_k + 1 else f"batches {self.last_k + 1}-{done}"
        where = f"in epoch {self.epoch} ({span} of {self.n_batches})"
        self.last_t, self.last_k, self.last_loss, self.last_n = now, done, host[0], n_seen
        if nfe is not None:
            self.last_nfe = (host[1], host[2])
        log.debug("health %s: loss %.4g, NFE %s", where, loss, nfe_w)
        self._judge(loss, nfe_w, where)
        if self.loss_ref is None:                 # the run's first window: its early level
            self.loss_ref = loss
            self.nfe_ref = nfe_w

    def end_epoch(self, epoch: int, metrics: dict) -> None:
        """The same tests on the epoch's means; after the run's first epoch, its means become the
        reference (never lowered below the first window's)."""
        if not self.enabled:
            return
        loss = metrics["train/loss"]
        nfe = (metrics["nfe/forward"], metrics["nfe/backward"]) if "nfe/forward" in metrics else None
        self._judge(loss, nfe, f"in epoch {epoch} (its mean)")
        if epoch == 1 or self.loss_ref is None:
            self.loss_ref = loss if self.loss_ref is None else max(self.loss_ref, loss)
            if nfe is not None:
                self.nfe_ref = nfe if self.nfe_ref is None else tuple(map(max, self.nfe_ref, nfe))

    def _judge(self, loss: float, nfe, where: str) -> None:
        if not math.isfinite(loss):
            raise Diverged(f"train/loss became {loss} {where}; {HINT}")
        # a loss that starts at 0 (a hinge already satisfied) has no scale to be far above
        if self.loss_ref is not None and self.loss_ref > 0 and loss > self.loss_factor * self.loss_ref:
            raise Diverged(f"train/loss {loss:.4g} {where} is over {self.loss_factor:g}x its start "
                           f"({self.loss_ref:.4g}); {HINT}")
        if nfe is None or self.nfe_ref is None:
            return
        for name, now, ref in zip(("forward", "backward"), nfe, self.nfe_ref):
            if ref > 0 and now > self.nfe_factor * ref:
                raise Diverged(f"{name} NFE per batch {now:.1f} {where} is over {self.nfe_factor:g}x the run's "
                               f"early level ({ref:.1f}): the dynamics are getting stiff; {HINT}")

    def state_dict(self) -> dict:
        return {"loss_ref": self.loss_ref, "nfe_ref": None if self.nfe_ref is None else list(self.nfe_ref)}

    def load_state_dict(self, state: dict | None) -> None:
        if state:
            self.loss_ref = state.get("loss_ref")
            self.nfe_ref = None if state.get("nfe_ref") is None else tuple(state["nfe_ref"])
