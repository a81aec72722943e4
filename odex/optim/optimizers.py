"""Optimizers and learning-rate schedules from conf/optim/ and conf/schedule/: `cfg.optim` is a
partial of any optimizer class, called with the model's parameter groups (`param_groups()` where
the model defines it). Design notes: docs/design-notes.md, "odex/optim/optimizers.py".
"""
from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from odex.config import build
from odex.errors import ConfigError


def param_groups(model: nn.Module) -> list[dict[str, Any]]:
    if hasattr(model, "param_groups"):
        return model.param_groups()
    return [{"params": [p for p in model.parameters() if p.requires_grad]}]


# Which tensors Nero keeps at zero mean and unit norm per output neuron (Nero only ever constrains
# tensors with more than one dimension).
NERO_CONSTRAINED = {
    # LyaNet's grouping: convolution kernels; biases and all 2-D parameters (linear weights) free
    "conv": lambda p: p.dim() > 2,
    "all": lambda p: p.dim() > 1,      # Nero's own default
    "none": lambda p: False,
}


def nero(params, *, lr: float = 0.01, beta: float = 0.999, constrain: str = "conv", eps: float = 1e-8):
    """pytorch-optimizer's Nero (Liu, Bernstein, Meister, Yue, "Learning by Turning: Neural
    Architecture Aware Optimisation", ICML 2021), with each parameter group split by whether its
    tensors are constrained (`constrain`, a key of NERO_CONSTRAINED). Per neuron (row 0):
    v = beta v + (1 - beta) ||g||^2,  p -= lr scale g / sqrt(v / (1 - beta^t)), then constrained
    tensors are re-projected to zero mean, unit norm per neuron. The algorithm's license is
    CC BY-NC-SA 4.0 (it ships inside the Apache-2.0 pytorch-optimizer package)."""
    from pytorch_optimizer import Nero

    rule = NERO_CONSTRAINED[constrain]     # a key of it: odex/schema.py Nero, checked before the run
    groups = []
    for group in params:
        group = group if isinstance(group, dict) else {"params": [group]}
        options = {k: v for k, v in group.items() if k != "params"}
        members = list(group["params"])
        for constrained in (True, False):
            chosen = [p for p in members if bool(rule(p)) == constrained]
            if chosen:
                groups.append({**options, "params": chosen, "constraints": constrained})
    return Nero(groups, lr=float(lr), beta=float(beta), eps=float(eps))


def build_optimizer(cfg_optim, model: nn.Module, *, capturable: bool = False) -> torch.optim.Optimizer:
    """The optimizer over the model's parameter groups. `capturable` (trainer.cuda_graph): an
    optimizer that has a capturable mode (Adam, AdamW, NAdam, RAdam, ...) is built in it, its state
    on the device and its learning rate readable from a device tensor inside a CUDA graph
    (odex/training/cuda_graph.py); one without (SGD, Nero) is built as configured."""
    make = build(cfg_optim)
    if not callable(make):
        raise ConfigError("optim must be a partial (`_partial_: true`) of an optimizer class")
    options = {}
    if capturable and "capturable" in inspect.signature(getattr(make, "func", make)).parameters:
        options["capturable"] = True
    return make(param_groups(model), **options)


class Schedule:
    """A scheduler and when to step it."""

    def __init__(self, scheduler, interval: str):
        self.scheduler = scheduler
        self.interval = interval
        # set by a part that takes the learning rate over (stochastic weight averaging, odex/training/callbacks.py)
        self.suspended = False

    def step(self, at: str) -> None:
        if self.scheduler is not None and at == self.interval and not self.suspended:
            self.scheduler.step()

    def state_dict(self) -> dict:
        return {} if self.scheduler is None else self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if self.scheduler is not None and state:
            self.scheduler.load_state_dict(state)


def build_schedule(cfg_schedule, optimizer, *, steps_per_epoch: int, max_epochs: int) -> Schedule:
    interval = cfg_schedule.get("interval", "epoch")     # epoch or step: checked before the run
    if cfg_schedule.get("scheduler") is None:
        return Schedule(None, interval)
    make = build(cfg_schedule.scheduler)
    target = getattr(make, "func", make)
    params = inspect.signature(target).parameters
    extra = {}
    if "total_steps" in params:
        extra["total_steps"] = steps_per_epoch * max_epochs if interval == "step" else max_epochs
    if "steps_per_epoch" in params:
        extra["steps_per_epoch"] = steps_per_epoch
    return Schedule(make(optimizer, **extra), interval)
