"""Learning-rate schedules torch does not have (conf/schedule/).

`PiecewiseLinear`: the CPL recipe's per-step schedule (Meunier et al., ICML 2022), by default
0 -> lr at 40% of the run -> lr/20 at 80% -> 0 at the end. Written here because torch's LinearLR
refuses a start factor of 0, and OneCycleLR's three phases tie the start to the middle value and
also cycle Adam's betas.
"""
from __future__ import annotations

from bisect import bisect_right
from typing import Sequence

from torch.optim.lr_scheduler import LRScheduler

from odex.errors import ConfigError


class PiecewiseLinear(LRScheduler):
    """lr_k = base_lr * f(k / total_steps), f linear between (points[i], factors[i]).

    k counts scheduler steps from 0: the first optimizer step runs at f(0) and the last of
    `total_steps` at f((total_steps - 1) / total_steps), so the schedule spans the run exactly
    (the reference code's index was one epoch ahead, which started it at lr/80 and ran its last
    epoch at 0). Every parameter group is scheduled, each from its own base lr."""

    def __init__(self, optimizer, total_steps: int, points: Sequence[float] = (0.0, 0.4, 0.8, 1.0),
                 factors: Sequence[float] = (0.0, 1.0, 0.05, 0.0), last_epoch: int = -1):
        points, factors = [float(p) for p in points], [float(f) for f in factors]
        if total_steps < 1:
            raise ConfigError(f"piecewise_linear schedule needs total_steps >= 1, got {total_steps}")
        # points rise from 0 to 1, as many factors: checked before the run (odex.config)
        self.total_steps, self.points, self.factors = total_steps, points, factors
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        s = min(max(step / self.total_steps, 0.0), 1.0)
        i = min(bisect_right(self.points, s), len(self.points) - 1)
        p0, p1, f0, f1 = self.points[i - 1], self.points[i], self.factors[i - 1], self.factors[i]
        return f0 + (f1 - f0) * (s - p0) / (p1 - p0)

    def get_lr(self) -> list[float]:
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]
