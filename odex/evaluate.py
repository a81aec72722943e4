"""What is measured on held-out data (conf/eval/): each evaluator maps (model, batches, prefix) to
a dict of device scalars named `<prefix>/<metric>`; the trainer reads them back once."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .nfe import reset_nfe, total_nfe


class CleanAccuracy:
    """Accuracy and mean cross-entropy on unperturbed inputs, and the mean forward NFE per batch
    of the solves (`<prefix>/nfe`, the inference cost)."""

    def __call__(self, model: nn.Module, batches, prefix: str = "test") -> dict[str, torch.Tensor]:
        was_training = model.training
        model.eval()
        reset_nfe(model)
        correct = loss = None
        n = 0
        with torch.no_grad():
            for x, y in batches:
                logits = model(x)
                c = (logits.argmax(1) == y).sum()
                l_ = F.cross_entropy(logits, y, reduction="sum")
                correct = c if correct is None else correct + c
                loss = l_ if loss is None else loss + l_
                n += len(y)
        model.train(was_training)
        out = {f"{prefix}/acc": correct.float() / n, f"{prefix}/loss": loss / n}
        nfe = total_nfe(model)
        if nfe is not None:
            out[f"{prefix}/nfe"] = nfe[0].float() / len(batches)
        return out


def evaluate(evaluators: dict, model: nn.Module, batches, prefix: str = "test") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for ev in evaluators.values():
        out.update(ev(model, batches, prefix))
    return out
