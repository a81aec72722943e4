"""Projected gradient descent (PGD) attacks in pixel space (Madry et al., "Towards Deep Learning
Models Resistant to Adversarial Attacks", ICLR 2018), with the update rules of torchattacks 3.5
`PGD` and `PGDL2` (the implementation LyaNet evaluated with):

    l-inf: x0 = clip(x + U(-eps, eps)),            x' = x_k + alpha * sign(g)
           x_{k+1} = clip(x + clamp(x' - x, -eps, eps))
    l2:    x0 = clip(x + eps * r * d / ||d||),      d ~ N(0, I), r ~ U(0, 1)
           x' = x_k + alpha * g / (||g|| + 1e-10),  x_{k+1} = clip(x + (x' - x) * min(1, eps / ||x' - x||))

where g is the gradient of the mean cross-entropy wrt the input and clip is to [0, 1]; norms are
per image. Our own short code: torchattacks itself pins requests~=2.25 (its setup.py), which
breaks a modern environment, and these ten lines are all of it that odex needs.

The model is attacked as it is (an ODE model through its own solver and gradient method), in eval
mode, with its parameters frozen for the attack (no parameter gradients are computed, which also
spares an adjoint the parameter integral). Everything stays on the device: no host sync per step.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError

NORMS = ("linf", "l2")
_DIV_EPS = 1e-10      # torchattacks' eps_for_division in the l2 gradient normalisation


@contextmanager
def attack_mode(model: nn.Module):
    """Eval mode and frozen parameters for the duration of an attack; both restored afterwards."""
    was_training = model.training
    frozen = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)


def _norms(v: torch.Tensor) -> torch.Tensor:
    """Per-image l2 norms, shaped to broadcast against `v`."""
    return v.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (v.dim() - 1)))


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    return torch.autograd.grad(loss, x)[0]


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int,
        norm: str = "linf", random_start: bool = True,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Adversarial images for `model` within the `norm` ball of radius `eps` around `x` (pixels
    in [0, 1]), after `steps` steps of size `alpha`; `generator` seeds the random start."""
    if norm not in NORMS:
        raise ConfigError(f"PGD norm must be one of {NORMS}, got {norm!r}")
    if eps < 0 or alpha < 0 or steps < 0:
        raise ConfigError(f"PGD needs eps, alpha, steps >= 0, got {eps}, {alpha}, {steps}")
    x = x.detach()
    with attack_mode(model), torch.enable_grad():
        adv = x.clone()
        if random_start:
            if norm == "linf":
                adv = adv + torch.empty_like(x).uniform_(-eps, eps, generator=generator)
            else:
                d = torch.empty_like(x).normal_(generator=generator)
                r = torch.empty_like(_norms(d)).uniform_(0, 1, generator=generator)
                adv = adv + d * (r / _norms(d) * eps)
            adv = adv.clamp(0, 1)
        for _ in range(steps):
            g = _input_grad(model, adv, y)
            if norm == "linf":
                adv = adv + alpha * g.sign()
                delta = (adv - x).clamp(-eps, eps)
            else:
                adv = adv + alpha * g / (_norms(g) + _DIV_EPS)
                delta = adv - x
                # min(1, eps / ||delta||); a zero delta (zero gradient, eps = 0) stays zero
                # where torchattacks would divide 0 by 0
                factor = (eps / _norms(delta).clamp_min(1e-30)).clamp(max=1.0)
                delta = delta * factor
            adv = (x + delta).clamp(0, 1)
    return adv.detach()
