"""Projected gradient descent (PGD) attacks in pixel space (Madry et al., "Towards Deep Learning
Models Resistant to Adversarial Attacks", ICLR 2018), with the update rules of torchattacks 3.5
`PGD` and `PGDL2`. `eps` may be one radius or one per example. The losses (`LOSSES`), in float64:

    ce:   cross-entropy (torchattacks' choice)
    dlr:  -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)   (Croce & Hein, ICML 2020)

The model is attacked as it is (through its own solver and gradient method), in eval mode, with its
parameters frozen; everything stays on the device (no host sync per step).
Design notes: docs/design-notes.md, "odex/evaluate/attacks.py" (the update rules, why DLR, our own code).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from odex.errors import ConfigError

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


def classifies(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per example, whether the model as it is (eval mode) classifies x as y."""
    with attack_mode(model), torch.no_grad():
        return model(x).argmax(1) == y


def _norms(v: torch.Tensor) -> torch.Tensor:
    """Per-image l2 norms, shaped to broadcast against `v`."""
    return v.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (v.dim() - 1)))


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy (the mean of it is torchattacks' PGD loss)."""
    return F.cross_entropy(logits, y, reduction="none")


def dlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example DLR loss (Croce & Hein 2020), larger when the true class is losing; float64."""
    z = logits.double()
    z_y = z.gather(1, y[:, None])[:, 0]
    others = z.masked_fill(F.one_hot(y, z.shape[1]).bool(), float("-inf")).max(dim=1).values
    margin = z_y - others
    if z.shape[1] < 3:                 # no third logit to scale by: the plain margin
        return -margin
    top = z.topk(3, dim=1).values
    return -margin / (top[:, 0] - top[:, 2] + 1e-12)


LOSSES = {"ce": cross_entropy, "dlr": dlr}


def _loss_fn(loss: str):
    try:
        return LOSSES[loss]
    except KeyError:
        raise ConfigError(f"PGD loss must be one of {sorted(LOSSES)}, got {loss!r}") from None


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn=cross_entropy) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    loss = loss_fn(model(x), y).mean()
    return torch.autograd.grad(loss, x)[0]


def no_input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """Per example, whether the input gradient of `loss` at `x` gives no direction: exactly zero
    (saturated softmax, quantised outputs) or not finite (an overflowing or unstable solve). Both
    are signs of gradient masking. Model as in an attack."""
    with attack_mode(model), torch.enable_grad():
        g = _input_grad(model, x, y, _loss_fn(loss)).flatten(1)
    return (g == 0).all(dim=1) | ~torch.isfinite(g).all(dim=1)


def _radius(eps, x: torch.Tensor) -> torch.Tensor | float:
    """A radius or step as a float, or a per-example tensor shaped to broadcast against `x`."""
    if torch.is_tensor(eps) and eps.dim() > 0:
        if eps.shape != (len(x),):
            raise ConfigError(f"a per-example eps needs shape ({len(x)},), got {tuple(eps.shape)}")
        if (eps < 0).any():
            raise ConfigError("PGD needs eps, alpha >= 0")
        return eps.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
    eps = float(eps)
    if eps < 0:
        raise ConfigError(f"PGD needs eps, alpha >= 0, got {eps}")
    return eps


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps, alpha, steps: int,
        norm: str = "linf", random_start: bool = True, loss: str = "ce",
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Adversarial images for `model` within the `norm` ball of radius `eps` around `x` (pixels in
    [0, 1]), after `steps` steps of size `alpha` (each a number, or one per example) that raise `loss`
    (a name in LOSSES); `generator` seeds the random start."""
    if norm not in NORMS:
        raise ConfigError(f"PGD norm must be one of {NORMS}, got {norm!r}")
    if steps < 0:
        raise ConfigError(f"PGD needs steps >= 0, got {steps}")
    loss_fn = _loss_fn(loss)
    x = x.detach()
    eps, alpha = _radius(eps, x), _radius(alpha, x)
    with attack_mode(model), torch.enable_grad():
        adv = x.clone()
        if random_start:
            if norm == "linf":
                adv = adv + torch.empty_like(x).uniform_(-1, 1, generator=generator) * eps
            else:
                d = torch.empty_like(x).normal_(generator=generator)
                r = torch.empty_like(_norms(d)).uniform_(0, 1, generator=generator)
                adv = adv + d * (r / _norms(d) * eps)
            adv = adv.clamp(0, 1)
        for _ in range(steps):
            # a non-finite gradient entry gives no direction: the step leaves that pixel alone
            # (else one NaN would turn the whole image into NaN, which is no adversarial image)
            g = torch.nan_to_num(_input_grad(model, adv, y, loss_fn), nan=0.0, posinf=0.0, neginf=0.0)
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
