"""The image classifier of the GQ paper (Norcliffe & Deisenroth, TMLR 2023, Sec. 5 / experiments/
images.py in a-norcliffe/torch_gq_adjoint): a small encoder, a wide autonomous conv drift on a
10-channel state, a two-layer readout. Small state, many parameters: where GQ's quadrature pays.
Design notes: docs/design-notes.md, "odex/models/gq_image.py" (layers and parameter counts).
"""
from __future__ import annotations

from torch import nn

from odex.data import DataInfo
from odex.errors import ConfigError
from odex.ode.grad import GradientMethod
from odex.ode.block import ODEBlock
from odex.ode.solver import Solver
from odex.models.layers import Normalize


class SoftplusConvDrift(nn.Module):
    """f(t, h) = conv3x3(softplus(conv3x3(softplus(conv3x3(h))))), autonomous."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.Softplus(),
                                 nn.Conv2d(width, width, 3, padding=1), nn.Softplus(),
                                 nn.Conv2d(width, channels, 3, padding=1))

    def forward(self, t, h):
        return self.net(h)


class GQImageNODE(nn.Module):
    def __init__(self, info: DataInfo, solver: Solver, grad: GradientMethod | str = "direct", *,
                 width: int = 50, state_channels: int = 10, readout_hidden: int = 50,
                 normalize: bool = True):
        super().__init__()
        if not info.is_image:
            raise ConfigError(f"model=gq_image needs image data; dataset {info.name} has shape {info.shape}")
        c, h, w = info.shape
        size = ((h - 2) // 2 - 2, (w - 2) // 2 - 2)
        if min(size) < 1:
            raise ConfigError(f"model=gq_image needs images of at least 8x8 pixels, got {h}x{w}")
        self.normalize = Normalize(info, enabled=normalize)
        self.encoder = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, state_channels, 3),
                                     nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(state_channels, state_channels, 3))
        self.ode = ODEBlock(SoftplusConvDrift(state_channels, width), solver, grad)
        self.readout = nn.Sequential(nn.Linear(state_channels * size[0] * size[1], readout_hidden),
                                     nn.ReLU(), nn.Linear(readout_hidden, info.num_classes))

    def forward(self, x):
        return self.readout(self.ode(self.encoder(self.normalize(x))).flatten(1))
