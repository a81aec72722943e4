"""An objective of the user's own, outside odex: objective/focal.yaml beside this file names it
(`objective=focal` with this folder on hydra.searchpath), with its keys in its `schema`.

The focal loss (Lin et al., "Focal Loss for Dense Object Detection", 2017):
mean over the batch of -(1 - p_y)^gamma log p_y, p = softmax(logits); gamma = 0 is cross-entropy.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from odex import schema
from odex.objectives.classification import Step


@dataclass
class FocalSchema(schema.Objective):
    gamma: schema.NonNegFloat = 2.0


class FocalLoss:
    schema = FocalSchema

    def __init__(self, gamma: float = 2.0):
        self.gamma = gamma

    def __call__(self, model, x, y) -> Step:
        logits = model(x)
        log_p = F.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
        return Step((-(1 - log_p.exp()) ** self.gamma * log_p).mean(), logits)
