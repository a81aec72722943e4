"""ANODE's ODE-ResNet for CIFAR-10 (Gholami, Keutzer, Biros, IJCAI 2019, Sec. 5: "ResNet-10 with
ODE blocks"): 4 stages of a residual BasicBlock then an ODE block dh/dt = BN(conv(ReLU(BN(conv(h))))).
Sizes come from the dataset (CIFAR or the 8x8 digits of the tests). The field holds train-mode
BatchNorm: grad=anode handles it, grad=gq refuses it. Design notes: docs/design-notes.md, "odex/models/ode_resnet.py".
"""
from __future__ import annotations

from torch import nn

from odex.data import DataInfo
from odex.errors import ConfigError
from odex.ode.grad import GradientMethod
from odex.ode.block import ODEBlock
from odex.ode.solver import Solver
from odex.models.layers import Normalize


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x)), the shortcut a strided 1x1 conv + BN when
    the shape changes (He et al., "Deep Residual Learning", CVPR 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(_conv3x3(c_in, c_out, stride), nn.BatchNorm2d(c_out), nn.ReLU(),
                                  _conv3x3(c_out, c_out), nn.BatchNorm2d(c_out))
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.body(x) + self.shortcut(x))


class ConvBNField(nn.Module):
    """f(t, h) = BN(conv3x3(ReLU(BN(conv3x3(h))))), autonomous (ANODE's ResNet vector field)."""

    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(_conv3x3(channels, channels), nn.BatchNorm2d(channels), nn.ReLU(),
                                 _conv3x3(channels, channels), nn.BatchNorm2d(channels))

    def forward(self, t, h):
        return self.net(h)


class ODEResNet(nn.Module):
    def __init__(self, info: DataInfo, solver: Solver, grad: GradientMethod | str = "anode", *,
                 width: float = 1.0, stages: tuple[int, ...] | list[int] = (64, 128, 256, 512),
                 normalize: bool = True):
        super().__init__()
        if not info.is_image:
            raise ConfigError(f"model=ode_resnet needs image data; dataset {info.name} has shape "
                              f"{info.shape}")
        channels = [max(1, round(c * width)) for c in stages]
        self.normalize = Normalize(info, enabled=normalize)
        self.stem = nn.Sequential(_conv3x3(info.channels, channels[0]), nn.BatchNorm2d(channels[0]),
                                  nn.ReLU())
        layers: list[nn.Module] = []
        c_prev = channels[0]
        for i, c in enumerate(channels):
            layers += [BasicBlock(c_prev, c, stride=1 if i == 0 else 2),
                       ODEBlock(ConvBNField(c), solver, grad)]
            c_prev = c
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.readout = nn.Linear(c_prev, info.num_classes)

    def forward(self, x):
        h = self.stages(self.stem(self.normalize(x)))
        return self.readout(self.pool(h).flatten(1))
