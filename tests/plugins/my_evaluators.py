"""An evaluator of the user's own, outside odex: eval/confidence.yaml beside this file names it
(`eval=[clean,confidence]` with this folder on hydra.searchpath). Its `schema` states its keys
(typed and ranged, like odex's in odex/schema.py) for the validation stage.

The mean confidence, E[max_k softmax(logits / T)_k] over the test examples (Guo et al., "On
Calibration of Modern Neural Networks", 2017, T the temperature), as a device scalar.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from odex import schema


@dataclass
class ConfidenceSchema(schema.Eval):
    temperature: schema.PosFloat = 1.0


class MeanConfidence:
    schema = ConfidenceSchema

    def __init__(self, temperature: float = 1.0):
        self.temperature = temperature

    def __call__(self, model, batches, prefix: str = "test") -> dict[str, torch.Tensor]:
        was_training = model.training
        model.eval()
        total, n = None, 0
        with torch.no_grad():
            for x, y in batches:
                p = torch.softmax(model(x) / self.temperature, dim=1).amax(1).sum()
                total = p if total is None else total + p
                n += len(y)
        model.train(was_training)
        return {f"{prefix}/confidence": total / n}
