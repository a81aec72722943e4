"""Building blocks the model families share."""
from __future__ import annotations

import torch
from torch import nn

from odex.data import DataInfo

# by name (odex/schema.py's `Activation` lists the names validation accepts)
ACTIVATIONS = {"relu": nn.ReLU, "softplus": nn.Softplus, "tanh": nn.Tanh, "elu": nn.ELU}


class Normalize(nn.Module):
    """(x - mean) / std per channel: inputs stay in pixel space [0, 1] outside the model, so
    attacks and certificates are stated on real pixels. Lipschitz constant 1 / min(std)."""

    def __init__(self, info: DataInfo, enabled: bool = True):
        super().__init__()
        shape = (1, -1, 1, 1) if info.is_image else (1, -1)
        mean = torch.tensor(info.mean if enabled else [0.0] * len(info.mean)).view(shape)
        std = torch.tensor(info.std if enabled else [1.0] * len(info.std)).view(shape)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ZeroChannels(nn.Module):
    """h(0) = [x, 0]: `augment_dim` zero channels (features) appended (Dupont et al. 2019)."""

    def __init__(self, augment_dim: int):
        super().__init__()
        self.augment_dim = augment_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.augment_dim == 0:
            return x
        return torch.cat([x, x.new_zeros((x.shape[0], self.augment_dim, *x.shape[2:]))], dim=1)


class _TimeField(nn.Module):
    """What ConvField and MLPField share: t appended as a constant channel (feature) of h."""

    time_dependent: bool

    def _t(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if not self.time_dependent:
            return h
        return torch.cat([h, t.to(h.dtype).expand(h.shape[0], 1, *h.shape[2:])], dim=1)


class ConvField(_TimeField):
    """f(t, h) = conv1x1(act(conv3x3(act(conv1x1(h))))), with t appended as a constant channel
    before each convolution when `time_dependent` (Dupont et al. 2019; Xia et al. 2021)."""

    def __init__(self, channels: int, hidden: int, time_dependent: bool = True, act: str = "relu"):
        super().__init__()
        k = int(time_dependent)
        self.time_dependent = time_dependent
        self.conv1 = nn.Conv2d(channels + k, hidden, 1)
        self.conv2 = nn.Conv2d(hidden + k, hidden, 3, padding=1)
        self.conv3 = nn.Conv2d(hidden + k, channels, 1)
        self.act = ACTIVATIONS[act]()

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv1(self._t(t, h)))
        h = self.act(self.conv2(self._t(t, h)))
        return self.conv3(self._t(t, h))


class MLPField(_TimeField):
    """f(t, h) = W3 act(W2 act(W1 [h, t])), for vector states."""

    def __init__(self, dim: int, hidden: int, time_dependent: bool = True, act: str = "relu"):
        super().__init__()
        k = int(time_dependent)
        self.time_dependent = time_dependent
        self.fc1 = nn.Linear(dim + k, hidden)
        self.fc2 = nn.Linear(hidden + k, hidden)
        self.fc3 = nn.Linear(hidden + k, dim)
        self.act = ACTIVATIONS[act]()

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc1(self._t(t, h)))
        h = self.act(self.fc2(self._t(t, h)))
        return self.fc3(self._t(t, h))
