"""Convex Potential Layer networks (Meunier, Delattre, Araujo, Allauzen, "A Dynamical System
Perspective for Lipschitz Neural Networks", ICML 2022; reference code MILES-PSL/Convex-Potential-Layer).

    z = x - (2 / (||W||_2^2 + eps)) W^T relu(W x + b)      (one 1-Lipschitz explicit Euler step)

`certified_radius` divides by a guaranteed Lipschitz bound (`lipschitz_bound()`, Gram iteration /
exact SVD per layer); `power_iteration_radius` is the paper's figure, kept for comparison.
Design notes: docs/design-notes.md, "odex/models/cpl.py" (power iteration, the certificate, the network).
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from odex.data import DataInfo
from odex.errors import ConfigError
from odex.schema import CPL_SIZES
from odex.evaluate.lipschitz import conv_norm_bound, dense_norm_bound, layer_gain
from odex.ode.precision import full_fp32
from odex.models.layers import Normalize


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / (v.norm() + 1e-12)


class ConvexPotentialLayer(nn.Module):
    """z = x - h W^T relu(W x + b), h = 2 / (sigma^2 + eps), sigma ~ ||W||_2 by power iteration.

    Subclasses say what W is (`lin`, with a bias; `op`, without) and its adjoint (`adj`), and give
    the shape of the power-iteration vector `u` (a buffer, so it is in the state_dict and warm
    starts every estimate, across checkpoints too)."""

    weight: torch.Tensor

    def __init__(self, u_shape: tuple[int, ...], *, train_iters: int = 1, eval_iters: int = 100,
                 eps: float = 1e-4):
        super().__init__()
        self.train_iters, self.eval_iters, self.eps = train_iters, eval_iters, eps
        self.register_buffer("u", _unit(torch.randn(u_shape)))
        self._sigma_eval: torch.Tensor | None = None
        self._sigma_key: tuple | None = None
        self._gain: torch.Tensor | None = None   # gain_bound()'s cache, valid with the eval sigma

    def lin(self, x: torch.Tensor) -> torch.Tensor:  # W x + b
        raise NotImplementedError

    def op(self, x: torch.Tensor) -> torch.Tensor:   # W x
        raise NotImplementedError

    def adj(self, y: torch.Tensor) -> torch.Tensor:  # W^T y
        raise NotImplementedError

    def norm_bound(self) -> torch.Tensor:
        """A guaranteed upper bound of ||W||_2 (float64 scalar; odex/evaluate/lipschitz.py)."""
        raise NotImplementedError

    def step(self) -> torch.Tensor:
        """h = 2 / (sigma^2 + eps), as the forward computes it."""
        return 2.0 / (self.sigma() ** 2 + self.eps)

    def gain_bound(self) -> torch.Tensor:
        """A guaranteed Lipschitz constant of this layer in eval mode (float64 scalar): max(1,
        h B^2 - 1) with the h the forward uses and B >= ||W||_2; 1 when the power iteration's
        sigma is within rounding of the norm. Cached with the eval sigma."""
        if self.training:
            raise RuntimeError("a CPL layer's certified gain is that of eval mode: call .eval() first")
        step = self.step()                   # fills or reuses the eval sigma cache
        if self._gain is None:               # dropped whenever sigma is (re)computed
            with torch.no_grad():
                self._gain = layer_gain(step.detach(), self.norm_bound())
        return self._gain

    def power_iteration(self, iters: int) -> torch.Tensor:
        """||W u|| after `iters` warm-started iterations u <- W^T W u / ||W^T W u||: a lower bound of
        ||W||_2 that converges to it; differentiable wrt W (u itself is treated as a constant)."""
        with torch.no_grad():
            u = self.u
            for _ in range(iters):
                u = _unit(self.adj(_unit(self.op(u))))
            self.u.copy_(u)
        # a fresh tensor, not the buffer: a later in-place update of u cannot corrupt this graph
        return self.op(u).norm()

    def sigma(self) -> torch.Tensor:
        if self.training:
            self._sigma_eval = self._gain = None     # any training forward drops the eval estimate
            return self.power_iteration(self.train_iters)
        # the weight's version counter and storage change with every optimizer step, load or move
        key = (self.weight._version, self.weight.data_ptr(), self.weight.dtype)
        if self._sigma_eval is None or key != self._sigma_key:
            with torch.no_grad(), full_fp32():
                self._sigma_eval = self.power_iteration(self.eval_iters)
            self._sigma_key, self._gain = key, None
        return self._sigma_eval

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.step() * self.adj(F.relu(self.lin(x)))


class ConvexPotentialConv(ConvexPotentialLayer):
    """W: a 3x3 convolution (stride 1, zero padding 1) from `channels` to `inner` channels."""

    def __init__(self, channels: int, inner: int, image_size: tuple[int, int], **kw):
        super().__init__((1, channels, *image_size), **kw)
        self.image_size = tuple(image_size)
        self.conv = nn.Conv2d(channels, inner, 3, padding=1)   # torch's default init, as in the paper's code

    def norm_bound(self) -> torch.Tensor:
        # the operator op() applies: zero padding 1 on images of image_size
        return conv_norm_bound(self.conv.weight, self.image_size, padding=1)

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight

    def lin(self, x):
        return self.conv(x)

    def op(self, x):
        return F.conv2d(x, self.conv.weight, padding=1)

    def adj(self, y):
        return F.conv_transpose2d(y, self.conv.weight, padding=1)


class ConvexPotentialDense(ConvexPotentialLayer):
    """W: a `width` x `features` matrix."""

    def __init__(self, features: int, width: int, **kw):
        super().__init__((1, features), **kw)
        self.linear = nn.Linear(features, width)

    def norm_bound(self) -> torch.Tensor:
        return dense_norm_bound(self.linear.weight)

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    def lin(self, x):
        return self.linear(x)

    def op(self, x):
        return F.linear(x, self.linear.weight)

    def adj(self, y):
        return y @ self.linear.weight


class PadChannels(nn.Module):
    """Zero-pad the channels up to `channels` (an isometry, so 1-Lipschitz)."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, 0, 0, 0, 0, self.channels - x.shape[1]))


class TruncHead(nn.Module):
    """The first K coordinates. Logit differences z_i - z_j are sqrt(2)-Lipschitz in the features."""

    def __init__(self, features: int, classes: int):
        super().__init__()
        if features < classes:
            raise ConfigError(f"model.last=trunc needs at least {classes} features, the network has "
                              f"{features}: use more model.channels or model.last=lln")
        self.classes = classes

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h[:, :self.classes]

    def radius(self, logits: torch.Tensor) -> torch.Tensor:
        """Per example: (top logit - runner-up) / sqrt(2), the l2 distance in feature space within
        which the top class cannot change."""
        top2 = logits.topk(2, dim=1).values
        return (top2[:, 0] - top2[:, 1]) / math.sqrt(2.0)


class NormalizedLinearHead(nn.Linear):
    """A linear layer with rows scaled to unit norm, plus a bias ("LLN" in the CPL code)."""

    def unit_rows(self) -> torch.Tensor:
        return F.normalize(self.weight, p=2, dim=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.unit_rows(), self.bias)

    def radius(self, logits: torch.Tensor) -> torch.Tensor:
        """Per example: min over j != top of (z_top - z_j) / ||w_top - w_j||, w the unit rows."""
        w = self.unit_rows()
        top = logits.argmax(dim=1)
        gaps = logits.gather(1, top[:, None]) - logits                      # (N, K)
        dist = torch.cdist(w[top], w)                                       # (N, K): ||w_top - w_j||
        ratio = gaps / dist.clamp_min(1e-12)
        ratio = ratio.masked_fill(F.one_hot(top, logits.shape[1]).bool(), float("inf"))
        return ratio.min(dim=1).values


HEADS = {"trunc": TruncHead, "lln": NormalizedLinearHead}


class CPLNetwork(nn.Module):
    """A 1-Lipschitz CPL classifier (times the Lipschitz constant of the input normalisation).

    `solver` and `grad` are accepted like every odex model's and unused: the CPL network is a
    fixed discretisation (one Euler step per layer), not an ODE block."""

    def __init__(self, info: DataInfo, solver=None, grad=None, *, size: str = "S",
                 conv_layers: int | None = None, dense_layers: int | None = None,
                 channels: int | None = None, dense_width: int | None = None, conv_inner: int = 5,
                 last: str = "trunc", norm_input: bool = False, train_iters: int = 1,
                 eval_iters: int = 100, eps: float = 1e-4):
        super().__init__()      # the keys' ranges: odex/schema.py CPLNetwork, checked before the run
        if not info.is_image:
            raise ConfigError(f"model=cpl needs images, dataset {info.name} has shape {info.shape}")
        preset = CPL_SIZES[size]     # S..XL as in araujoalexandre/Lipschitz-SLL-Networks, tiny for tests
        conv_layers = preset["conv_layers"] if conv_layers is None else conv_layers
        dense_layers = preset["dense_layers"] if dense_layers is None else dense_layers
        channels = preset["channels"] if channels is None else channels
        dense_width = preset["dense_width"] if dense_width is None else dense_width
        c, h, w = info.shape
        if channels < c:
            raise ConfigError(f"model.channels={channels} is fewer than the {c} input channels")
        if h < 4 or w < 4:
            raise ConfigError(f"model=cpl pools 4x4: images of {h}x{w} pixels are too small")
        # The paper's recipe only centres the inputs (L = 1); norm_input also divides by the std.
        norm_info = info if norm_input else replace(info, std=(1.0,) * len(info.std))
        self.normalize = Normalize(norm_info)
        # l2 Lipschitz constant of pixels -> head input, that of the input normalisation: a Python
        # float, no device read per batch
        self.lipschitz = 1.0 / min(norm_info.std)
        power = dict(train_iters=train_iters, eval_iters=eval_iters, eps=eps)
        self.pad = PadChannels(channels)
        self.conv = nn.Sequential(*[ConvexPotentialConv(channels, conv_inner, (h, w), **power)
                                    for _ in range(conv_layers)])
        self.pool = nn.AvgPool2d(4, divisor_override=4)
        features = channels * (h // 4) * (w // 4)
        self.dense = nn.Sequential(*[ConvexPotentialDense(features, dense_width, **power)
                                     for _ in range(dense_layers)])
        self.last = HEADS[last](features, info.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.pool(self.conv(self.pad(self.normalize(x)))).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.features(x))

    def lipschitz_bound(self) -> torch.Tensor:
        """A guaranteed Lipschitz constant (l2) of pixels -> head input in eval mode (float64
        scalar): that of the input normalisation times every CPL layer's guaranteed gain."""
        bound = torch.tensor(self.lipschitz, dtype=torch.float64, device=self.normalize.mean.device)
        for layer in (*self.conv, *self.dense):
            bound = bound * layer.gain_bound().to(bound.device)
        return bound

    def certified_radius(self, logits: torch.Tensor) -> torch.Tensor:
        """Per example, an l2 radius in pixel space within which the predicted class cannot change:
        guaranteed, from `lipschitz_bound()` (float64)."""
        return self.last.radius(logits).to(torch.float64) / self.lipschitz_bound()

    def power_iteration_radius(self, logits: torch.Tensor) -> torch.Tensor:
        """The paper's radius: every layer taken as 1-Lipschitz, which holds only as far as the
        power iteration's estimate of each ||W||_2 is exact (it is a lower estimate)."""
        return self.last.radius(logits) / self.lipschitz
