"""LyaNet's classifier (Rodriguez, Ames, Yue, ICML 2022; the dynamics of the reference code
ivandariojr/LyapunovLearning, dynamics/classification.py, `restrict_to_simplex: False`).

An encoder maps the image to a matrix X(x); the logits h start at 0 and flow towards the class
anchors, dh/dt = gain * kappa * w * d; logits = h(t1).
Design notes: docs/design-notes.md, "odex/models/lyanet.py" (the equations, the encoder, the gain).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from odex.data import DataInfo
from odex.errors import ConfigError
from odex.ode.grad import GradientMethod
from odex.objectives.lyapunov import LogitDynamics, LyapunovParts, anchor_kappa
from odex.ode.block import ODEBlock
from odex.ode.solver import Solver
from odex.models.augmented import downsamplings
from odex.models.layers import Normalize


class LyaNetField(nn.Module):
    """f(t, (h, X)) = (gain kappa w(h, d) d(h, X), 0): X rides along as a constant part of the
    state, so an adjoint differentiates the solve with respect to it (and so the encoder) too.
    h may carry extra sample dimensions, (B, ..., K) with X (B, m, m): objective=lyanet_mc
    evaluates f at many states per input in one call."""

    def __init__(self, classes: int, hidden: int, dropout: float = 0.5, anchor: float = 15.0,
                 gain: float = 100.0, trainable_gain: bool = False):
        super().__init__()
        self.inp = nn.Linear(classes, hidden)
        self.out = nn.Linear(hidden, classes)
        self.act = nn.PReLU()
        self.drop = nn.Dropout(dropout)
        anchors = torch.full((classes, classes), -float(anchor))
        anchors.fill_diagonal_(float(anchor))
        self.register_buffer("anchors", anchors)
        self.kappa = anchor_kappa(anchor, classes)
        g = torch.tensor(float(gain))
        if trainable_gain:
            self.gain = nn.Parameter(g)
        else:
            self.register_buffer("gain", g)

    def direction(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        u = self.act(self.drop(self.inp(h)))
        xu = torch.einsum("bij,b...j->b...i", x, u)
        return F.normalize(self.out(self.act(self.drop(xu))), dim=-1)

    def forward(self, t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        h, x = state
        d = self.direction(h, x)
        c = self.anchors.to(h.dtype)
        # (c_k - h) . d for every anchor k, without the (..., K, K) tensor of differences
        toward = d @ c.T - (h * d).sum(-1, keepdim=True)
        dist = torch.cdist(h.reshape(-1, h.shape[-1]), c,
                           compute_mode="donot_use_mm_for_euclid_dist").view(h.shape)
        speed = (dist * toward.softmax(-1)).mean(-1, keepdim=True)
        return self.gain * self.kappa * speed * d, torch.zeros_like(x)


@dataclass
class GainUpdate:
    """The reference's per-step gain controller (pl_modules.py), from the violation rate r of the
    step's objective=lyanet_mc: until `switch_epoch`, gain *= down when r < low and gain > min;
    after it, gain *= up when r > high and gain < max. (The reference switches after its 0-based
    epoch 60, one epoch later than `switch_epoch: 60` does here.) Done on the device: no sync."""
    switch_epoch: int = 60
    low: float = 0.7
    high: float = 0.1
    down: float = 0.9999
    up: float = 1.0001
    min: float = 1.0
    max: float = 100.0

    @torch.no_grad()
    def __call__(self, gain: torch.Tensor, rate: torch.Tensor, epoch: int) -> None:
        if epoch <= self.switch_epoch:
            change, factor = (rate < self.low) & (gain > self.min), self.down
        else:
            change, factor = (rate > self.high) & (gain < self.max), self.up
        gain.copy_(torch.where(change, gain * factor, gain))


def resnet18_encoder(info: DataInfo, features: int, channels: int) -> nn.Module:
    """torchvision's ResNet-18, random init, first conv for the image's channels (as the reference
    code: 7x7, stride 2, no bias), last layer to `features`. `channels` is unused."""
    import torchvision

    net = torchvision.models.resnet18(weights=None, num_classes=features)
    net.conv1 = nn.Conv2d(info.channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net


def small_encoder(info: DataInfo, features: int, channels: int) -> nn.Module:
    """conv3x3-BN-ReLU, then stride-2 conv3x3-BN-ReLU (doubling the width) until the maps are at
    most 4 pixels wide, global average pooling, a linear layer to `features`."""
    c, h, w = info.shape
    layers: list[nn.Module] = [nn.Conv2d(c, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()]
    width = channels
    for _ in range(downsamplings(max(h, w), target=4)):
        layers += [nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU()]
        width *= 2
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, features)]
    return nn.Sequential(*layers)


ENCODERS = {"resnet18": resnet18_encoder, "small": small_encoder}


class StateLogits(nn.Module):
    """The readout of LyaNet's state (h, X): the logits are h."""

    def forward(self, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return state[0]


class LyaNet(nn.Module):
    def __init__(self, info: DataInfo, solver: Solver, grad: GradientMethod | str = "direct", *,
                 encoder: str = "resnet18", channels: int = 32, hidden: int = 128,
                 dropout: float = 0.5, anchor: float = 15.0, gain: float = 100.0,
                 trainable_gain: bool = False, gain_update: dict | None = None, normalize: bool = True):
        super().__init__()
        if not info.is_image:
            raise ConfigError(f"model=lyanet encodes images; dataset {info.name} has shape {info.shape}")
        # the keys' ranges (gain_update's too): odex/schema.py LyaNet, checked before the run
        self.classes, self.hidden, self.anchor = info.num_classes, hidden, float(anchor)
        self.normalize = Normalize(info, enabled=normalize)
        self.encoder = ENCODERS[encoder](info, hidden * hidden, channels)
        self.ode = ODEBlock(LyaNetField(info.num_classes, hidden, dropout, anchor, gain, trainable_gain),
                            solver, grad)
        self.gain_update = None if gain_update is None else GainUpdate(**gain_update)

    @property
    def field(self) -> LyaNetField:
        return self.ode.field.field

    @property
    def kappa(self) -> float:
        return self.field.kappa

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """X(x): (B, hidden, hidden)."""
        return self.encoder(self.normalize(x)).view(-1, self.hidden, self.hidden)

    def _check_training_solve(self) -> None:
        if self.training and self.field.drop.p > 0 and (self.ode.solver.adaptive or not self.ode.grad.supports.random_field):
            raise ConfigError(
                "model.dropout > 0 makes LyaNet's vector field random in training, but an adaptive solver's "
                "error control and an adjoint's backward solve need the same field at every call: set "
                "model.dropout=0.0, or train through a fixed-step solver with grad=direct (solver=rk4)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_training_solve()
        xs = self.features(x)
        h, _ = self.ode((xs.new_zeros(len(x), self.classes), xs))
        return h

    def logit_dynamics(self, x: torch.Tensor) -> LogitDynamics:
        """For objective=lyanet_mc: f(t, h; x) at any states h (B, S, K). Each call counts as one
        forward evaluation of the field."""
        xs = self.features(x)
        counted = self.ode.field
        counted.backward_phase = False

        def field(t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            return counted(t, (h, xs))[0]

        return LogitDynamics(field, self.classes, float(self.ode.solver.t1), self.anchor * math.sqrt(self.classes))

    def lyapunov_parts(self, x: torch.Tensor) -> LyapunovParts:
        self._check_training_solve()
        xs = self.features(x)
        return LyapunovParts(self.ode, (xs.new_zeros(len(x), self.classes), xs), StateLogits())

    # trainer hooks (odex.training.trainer.call_hooks)
    def on_step_end(self, epoch: int, step, **_) -> None:
        rate = step.stats.get("lyapunov/violation_rate")
        if self.gain_update is not None and rate is not None:
            self.gain_update(self.field.gain.data, rate.detach(), epoch)

    def on_epoch_end(self, epoch: int, metrics: dict, **_) -> None:
        metrics["model/gain"] = float(self.field.gain)     # once per epoch
