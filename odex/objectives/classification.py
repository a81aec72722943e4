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


class Margin:
    """The multi-class hinge loss of the CPL paper (Meunier et al., ICML 2022), torch's
    multi_margin_loss with p = 1:  mean over the batch of  sum_{j != y} max(0, m - z_y + z_j) / K."""

    def __init__(self, margin: float = 0.7):
        self.margin = margin

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Step:
        logits = model(x)
        return Step(F.multi_margin_loss(logits, y, p=1, margin=self.margin), logits)
