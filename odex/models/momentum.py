"""Momentum neural ODEs (HBNODE, GHBNODE: Xia et al., NeurIPS 2021; AdamNODE: Cho et al., 2022) and the
first-order NODEs they are compared with, as image classifiers built the way their papers build them:
no encoder, the state on the input's pixel grid, a `ConvField`, a linear readout of h(T).

    PixelNODE       h' = f(t, h)                          (augment_dim > 0: Dupont et al.'s ANODE)
    HeavyBallNODE   h' = sigma(m),  m' = -gamma m + f(t, h) - xi h
    AdamNODE        h' = -m / (sqrt(rho(v)) + eps),  m' = beta1 (-f - m),  v' = beta2 (f^2 - v)

The extended state is one tensor, so one evaluation of the whole system is one NFE.
Design notes: docs/design-notes.md, "odex/models/momentum.py" (signs, initial state, presets).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from odex.data import DataInfo
from odex.errors import ConfigError
from odex.ode.grad import GradientMethod
from odex.ode.block import ODEBlock
from odex.ode.solver import Solver
from odex.models.layers import ACTIVATIONS, ConvField, Normalize, ZeroChannels

# rho in AdamNODE's sqrt(rho(v)): v follows f^2 >= 0 but can dip below 0 numerically.
ROOTS = {"softplus": F.softplus, "sigmoid": torch.sigmoid}


def from_preset(preset: str | None, presets: Mapping | None, **given: Any) -> dict[str, Any]:
    """`given` with every None replaced by the preset's value for that key (explicit keys win). The
    preset's name, its row's keys and a size left unset are checked before the run (odex/schema.py
    PixelModel.problems)."""
    row: Mapping = presets[preset] if preset is not None else {}
    return {k: (row.get(k) if v is None else v) for k, v in given.items()}


def inverse_softplus(y: float) -> float:
    """x with softplus(x) = y > 0 (stable form of log(exp(y) - 1))."""
    return y + math.log(-math.expm1(-y))


# ----------------------------------------------------------------------------------------------
# Vector fields of the extended state
# ----------------------------------------------------------------------------------------------

class HeavyBallField(nn.Module):
    """d/dt [h, m] = [sigma(m), -gamma m + f(t, h) - xi h] (Xia et al. 2021, eq. HBNODE/GHBNODE),
    gamma = sigmoid(gamma_logit), xi = softplus(xi_raw) initialised at `xi` (None: no xi term)."""

    def __init__(self, f: nn.Module, dim: int, *, gamma_logit: float = -3.0,
                 sigma: str | None = None, xi: float | None = None):
        super().__init__()
        self.f = f
        self.dim = dim
        self.gamma_logit = nn.Parameter(torch.tensor(float(gamma_logit)))
        self.sigma = nn.Identity() if sigma is None else ACTIVATIONS[sigma]()
        self.xi_raw = None if xi is None else nn.Parameter(torch.tensor(inverse_softplus(float(xi))))

    @property
    def gamma(self) -> torch.Tensor:
        return torch.sigmoid(self.gamma_logit)

    @property
    def xi(self) -> torch.Tensor | None:
        return None if self.xi_raw is None else F.softplus(self.xi_raw)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h, m = z.split(self.dim, dim=1)
        dm = self.f(t, h) - self.gamma * m
        if self.xi_raw is not None:
            dm = dm - self.xi * h
        return torch.cat([self.sigma(m), dm], dim=1)


class AdamField(nn.Module):
    """d/dt [h, m, v] = [-m / (sqrt(rho(v)) + eps), beta1 (-f - m), beta2 (f^2 - v)], f = f(t, h)
    (Cho et al. 2022), beta_i = sigmoid(beta_i_logit), rho = softplus or sigmoid."""

    def __init__(self, f: nn.Module, dim: int, *, beta1_logit: float = -5.0, beta2_logit: float = 5.0,
                 root: str = "softplus", eps: float = 1e-8):
        super().__init__()
        self.f = f
        self.dim = dim
        self.beta1_logit = nn.Parameter(torch.tensor(float(beta1_logit)))
        self.beta2_logit = nn.Parameter(torch.tensor(float(beta2_logit)))
        self.root = root
        self.eps = eps

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h, m, v = z.split(self.dim, dim=1)
        f = self.f(t, h)
        dh = -m / (ROOTS[self.root](v).sqrt() + self.eps)
        dm = torch.sigmoid(self.beta1_logit) * (-f - m)
        dv = torch.sigmoid(self.beta2_logit) * (f * f - v)
        return torch.cat([dh, dm, dv], dim=1)


# ----------------------------------------------------------------------------------------------
# Initial states
# ----------------------------------------------------------------------------------------------

class LearnedMomentum(nn.Module):
    """h(0) = [x, a], m(0) = b and, with `second_moment`, v(0) = b^2, where [a, b] = g(x) and g is
    Conv1x1 -> LeakyReLU(0.3) -> Conv3x3 -> LeakyReLU(0.3) -> Conv1x1 (Xia et al. 2021)."""

    def __init__(self, in_channels: int, dim: int, hidden: int, second_moment: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.dim = dim
        self.second_moment = second_moment
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1), nn.LeakyReLU(0.3),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.LeakyReLU(0.3),
            nn.Conv2d(hidden, 2 * dim - in_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        m = out[:, self.dim - self.in_channels:]
        parts = [x, out]
        if self.second_moment:
            parts.append(m * m)
        return torch.cat(parts, dim=1)


# ----------------------------------------------------------------------------------------------
# Classifiers
# ----------------------------------------------------------------------------------------------

class PixelStateClassifier(nn.Module):
    """logits = readout(h(T)), z(0) = initial(normalize(x)), z(T) from the ODE block, h the first
    `dim` channels of z. The state keeps the input's spatial size (no encoder)."""

    def __init__(self, info: DataInfo, initial: nn.Module, field: nn.Module, dim: int,
                 solver: Solver, grad: GradientMethod | str, normalize: bool):
        super().__init__()
        _, height, width = info.shape
        self.normalize = Normalize(info, enabled=normalize)
        self.initial = initial
        self.ode = ODEBlock(field, solver, grad)
        self.dim = dim
        self.readout = nn.Linear(dim * height * width, info.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.ode(self.initial(self.normalize(x)))
        return self.readout(z[:, :self.dim].flatten(1))


def _image_channels(info: DataInfo, model: str) -> int:
    if not info.is_image:
        raise ConfigError(f"model={model} is a convolutional image classifier; dataset "
                          f"{info.name!r} has vector inputs of shape {tuple(info.shape)}")
    return info.channels


def _check_size(dim: int, channels: int) -> None:
    """The input's channels are known before the run only for odex's own datasets (odex/schema.py
    PixelModel.problems): checked again here, for a dataset of the user's own."""
    if dim < channels:
        raise ConfigError(f"model.dim={dim} must be >= the input's {channels} channels "
                          "(h(0) starts with the input itself)")


class PixelNODE(PixelStateClassifier):
    """First-order NODE on the pixel grid: h(0) = [x, 0], h' = f(t, h) (plain for augment_dim 0,
    Dupont et al.'s augmented NODE otherwise)."""

    def __init__(self, info: DataInfo, solver: Solver, grad: GradientMethod | str = "direct", *,
                 preset: str | None = None, presets: Mapping | None = None,
                 augment_dim: int | None = None, hidden: int | None = None, activation: str = "relu",
                 normalize: bool = True):
        channels = _image_channels(info, "pixel_node")
        size = from_preset(preset, presets, augment_dim=augment_dim, hidden=hidden)
        dim = channels + size["augment_dim"]
        _check_size(dim, channels)
        field = ConvField(dim, size["hidden"], act=activation)
        super().__init__(info, ZeroChannels(size["augment_dim"]), field, dim, solver, grad, normalize)


class HeavyBallNODE(PixelStateClassifier):
    """HBNODE (sigma None, xi None) or GHBNODE (sigma tanh, xi > 0); see `HeavyBallField`."""

    def __init__(self, info: DataInfo, solver: Solver, grad: GradientMethod | str = "direct", *,
                 preset: str | None = None, presets: Mapping | None = None,
                 dim: int | None = None, hidden: int | None = None, xi: float | None = None,
                 sigma: str | None = None, gamma_logit: float = -3.0, activation: str = "relu",
                 normalize: bool = True):
        channels = _image_channels(info, "heavy_ball")
        size = from_preset(preset, presets, dim=dim, hidden=hidden, xi=xi, sigma=sigma)
        _check_size(size["dim"], channels)
        field = HeavyBallField(ConvField(size["dim"], size["hidden"], act=activation), size["dim"],
                               gamma_logit=gamma_logit, sigma=size["sigma"], xi=size["xi"])
        super().__init__(info, LearnedMomentum(channels, size["dim"], size["hidden"]), field,
                         size["dim"], solver, grad, normalize)


class AdamNODE(PixelStateClassifier):
    """AdamNODE; see `AdamField`. Variant keys (root, rate logits) come from the preset unless given."""

    def __init__(self, info: DataInfo, solver: Solver, grad: GradientMethod | str = "direct", *,
                 preset: str | None = None, presets: Mapping | None = None,
                 dim: int | None = None, hidden: int | None = None, root: str | None = None,
                 beta1_logit: float | None = None, beta2_logit: float | None = None,
                 eps: float = 1e-8, activation: str = "relu", normalize: bool = True):
        channels = _image_channels(info, "adam_node")
        size = from_preset(preset, presets, dim=dim, hidden=hidden, root=root,
                           beta1_logit=beta1_logit, beta2_logit=beta2_logit)
        _check_size(size["dim"], channels)
        variant = {k: size[k] for k in ("root", "beta1_logit", "beta2_logit") if size[k] is not None}
        field = AdamField(ConvField(size["dim"], size["hidden"], act=activation), size["dim"], eps=eps,
                          **variant)
        super().__init__(info, LearnedMomentum(channels, size["dim"], size["hidden"], second_moment=True),
                         field, size["dim"], solver, grad, normalize)
