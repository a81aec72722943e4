"""Augmented neural ODE classifier (Dupont, Doucet, Teh, "Augmented Neural ODEs", NeurIPS 2019):
a conv encoder (images) or the raw input (vectors), `augment_dim` zero channels appended, an ODE
block, a linear readout. `augment_dim: 0` is the plain NODE. Design notes: docs/design-notes.md, "odex/models/augmented.py".
"""
from __future__ import annotations

import math

import torch
from torch import nn

from odex.data import DataInfo
from odex.ode.grad import GradientMethod
from odex.objectives.lyapunov import FlatReadout, LyapunovParts
from odex.ode.block import ODEBlock
from odex.ode.solver import Solver
from odex.models.layers import ConvField, MLPField, Normalize, ZeroChannels


def downsamplings(size: int, target: int = 8) -> int:
    """How many stride-2 convolutions bring `size` pixels down to at most `target`."""
    return max(0, math.ceil(math.log2(size / target))) if size > target else 0


class AugmentedNODE(nn.Module):
    def __init__(self, info: DataInfo, solver: Solver, grad: GradientMethod | str = "direct", *,
                 channels: int = 16, hidden: int = 32, augment_dim: int = 4,
                 time_dependent: bool = True, activation: str = "softplus", normalize: bool = True,
                 downsample: int | None = None):
        super().__init__()      # the keys' ranges: odex/schema.py AugmentedNODE, checked before the run
        self.augment = ZeroChannels(augment_dim)
        self.normalize = Normalize(info, enabled=normalize)
        if info.is_image:
            c, h, w = info.shape
            n_down = downsamplings(max(h, w)) if downsample is None else downsample
            layers: list[nn.Module] = [nn.Conv2d(c, channels, 3, padding=1), nn.ReLU()]
            for _ in range(n_down):
                layers += [nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU()]
                h, w = (h + 1) // 2, (w + 1) // 2
            self.encoder = nn.Sequential(*layers)
            state = channels + augment_dim
            field = ConvField(state, hidden, time_dependent=time_dependent, act=activation)
            features = state * h * w
        else:
            self.encoder = nn.Identity()
            state = info.shape[0] + augment_dim
            field = MLPField(state, hidden, time_dependent=time_dependent, act=activation)
            features = state
        self.ode = ODEBlock(field, solver, grad)
        self.readout = nn.Linear(features, info.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.augment(self.encoder(self.normalize(x)))
        return self.readout(self.ode(h).flatten(1))

    def lyapunov_parts(self, x: torch.Tensor) -> LyapunovParts:
        """The ODE block, its initial state and the state's readout (objective=lyanet_path)."""
        return LyapunovParts(self.ode, self.augment(self.encoder(self.normalize(x))), FlatReadout(self.readout))
