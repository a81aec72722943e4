"""Training-loop callbacks, chosen with `callbacks=[swa,best_checkpoint]` (conf/callbacks/, each
choice under its own key of the `callbacks` node). Each is an object with trainer hooks
(odex.training.trainer.call_hooks) and a state_dict() kept in the run's checkpoints, so a resumed run goes on
with them.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel

import odex.training.checkpoint as ckpt
from odex.errors import ConfigError

log = logging.getLogger("odex")


def recompute_batchnorm(model: nn.Module, batches) -> None:
    """Batch-norm running statistics recomputed as a plain average over `batches` (the inputs of
    (x, y) pairs), as torch.optim.swa_utils.update_bn does -- but with only the batch-norm layers in
    training mode. update_bn puts the whole model in training mode, which turns dropout on inside an
    ODE's vector field: an adaptive solver would then integrate a random field."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training = model.training
    model.eval()
    momenta = {}
    for m in norms:
        m.reset_running_stats()
        momenta[m] = m.momentum
        m.momentum = None          # a cumulative average over the batches
        m.train()
    with torch.no_grad():
        for x, _ in batches:
            model(x)
    for m in norms:
        m.momentum = momenta[m]
    model.train(was_training)


class StochasticWeightAveraging:
    """Stochastic weight averaging (Izmailov et al., UAI 2018) with torch.optim.swa_utils, as
    Lightning's callback used by the LyaNet reference code does it.

    After epoch `after_epoch` the callback takes the learning rate over from the run's schedule:
    SWALR anneals it (`anneal_strategy`, over `anneal_epochs` epochs) to `lr_factor` x each
    group's base learning rate, and the weights after every later epoch are averaged. Before the
    last epoch's evaluation the average replaces the model's weights and the batch-norm statistics
    are recomputed over the training set, so the final metrics, last.pt and best.pt are the averaged
    model's. Logged: `swa/models` (how many epochs are in the average)."""

    def __init__(self, after_epoch: int = 60, lr_factor: float = 0.1, anneal_epochs: int = 10,
                 anneal_strategy: str = "cos"):
        # the keys' ranges: odex/schema.py StochasticWeightAveraging, checked before the run
        self.after_epoch, self.lr_factor = after_epoch, lr_factor
        self.anneal_epochs, self.anneal_strategy = anneal_epochs, anneal_strategy
        self.average: AveragedModel | None = None
        self.scheduler: SWALR | None = None

    @property
    def active(self) -> bool:
        return self.average is not None

    def on_fit_start(self, trainer, model, optimizer, schedule, **_) -> None:
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.swa_lrs = [self.lr_factor * g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        if self.after_epoch >= trainer.max_epochs:
            log.warning("callbacks.swa.after_epoch=%d >= trainer.max_epochs=%d: no weights will be averaged",
                        self.after_epoch, trainer.max_epochs)

    def _start(self) -> None:
        self.average = AveragedModel(self.model)
        self.scheduler = SWALR(self.optimizer, swa_lr=self.swa_lrs, anneal_epochs=self.anneal_epochs,
                               anneal_strategy=self.anneal_strategy)
        self.schedule.suspended = True

    def on_epoch_start(self, epoch: int, **_) -> None:
        if epoch > self.after_epoch and not self.active:
            self._start()

    def on_evaluate_start(self, epoch: int, model: nn.Module, train_batches, final: bool, **_) -> None:
        if not self.active:
            return
        self.average.update_parameters(model)
        self.scheduler.step()
        if final:
            with torch.no_grad():
                for p, q in zip(model.parameters(), self.average.module.parameters()):
                    p.copy_(q)
            recompute_batchnorm(model, train_batches)

    def on_epoch_end(self, epoch: int, metrics: dict, **_) -> None:
        if self.active:
            metrics["swa/models"] = int(self.average.n_averaged)    # once per epoch

    def state_dict(self) -> dict:
        if not self.active:
            return {"active": False}
        return {"active": True, "average": self.average.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("active"):
            self._start()
            self.average.load_state_dict(state["average"])
            self.scheduler.load_state_dict(state["scheduler"])


class BestCheckpoint:
    """Keeps `checkpoints/best.pt` (the model's weights, the epoch and its metrics) of the epoch
    with the best `monitor` (`mode`: max or min), by default the validation accuracy (set
    dataset.val_fraction > 0). Logged each epoch: `best/epoch`, `best/<monitor>` and that epoch's
    test metrics as `best/test/...` (test metrics of epochs without a test evaluation are absent)."""

    def __init__(self, monitor: str = "val/acc", mode: str = "max", filename: str = "best.pt"):
        # the keys' values: odex/schema.py BestCheckpoint, checked before the run
        self.monitor, self.mode, self.filename = monitor, mode, filename
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_test: dict[str, float] = {}

    def on_fit_start(self, trainer, **_) -> None:
        self.path = Path(trainer.run_dir) / "checkpoints" / self.filename

    def on_epoch_end(self, epoch: int, metrics: dict, model: nn.Module, **_) -> None:
        if self.monitor not in metrics:
            hint = " (set dataset.val_fraction, e.g. 0.1)" if self.monitor.startswith("val/") else ""
            raise ConfigError(f"callbacks.best_checkpoint.monitor={self.monitor} is not among the epoch's "
                              f"metrics{hint}")
        value = float(metrics[self.monitor])
        improved = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if math.isfinite(value) and improved:
            self.best, self.best_epoch = value, epoch
            self.best_test = {k: v for k, v in metrics.items() if k.startswith("test/")}
            ckpt.save_atomic({"epoch": epoch, "model": model.state_dict(), "monitor": self.monitor,
                              "value": value, "metrics": dict(metrics)}, self.path)
        if self.best is not None:
            metrics["best/epoch"] = self.best_epoch
            metrics[f"best/{self.monitor}"] = self.best
            metrics.update({f"best/{k}": v for k, v in self.best_test.items()})

    def state_dict(self) -> dict:
        return {"best": self.best, "epoch": self.best_epoch, "test": dict(self.best_test)}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = state.get("best"), state.get("epoch")
        self.best_test = dict(state.get("test") or {})
