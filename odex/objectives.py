"""Training objectives: `objective(model, x, y) -> Step` (conf/objective/).

A `Step` carries the loss to backpropagate, the logits when the objective computed them (for
train/acc), and device-side scalars to average over the epoch and log under their own names.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Step:
    loss: torch.Tensor
    logits: torch.Tensor | None = None
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


class CrossEntropy:
    """The mean cross-entropy of the model's logits."""

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Step:
        logits = model(x)
        return Step(F.cross_entropy(logits, y, label_smoothing=self.label_smoothing), logits)
