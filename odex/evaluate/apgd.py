"""Auto-PGD (APGD), the gradient attacks of AutoAttack: Croce & Hein, "Reliable evaluation of
adversarial robustness with an ensemble of diverse parameter-free attacks", ICML 2020, Algorithm 1.

PGD with momentum and a step size halved at checkpoints (from 2 eps), z_k the projected step from x_k:

    x_{k+1} = P(x_k + a (z_k - x_k) + (1 - a) (x_k - x_{k-1})),   a = 0.75 (1 at the first step)

Losses (`APGD_LOSSES`): `ce` (APGD-CE) and the targeted DLR loss `dlr_t` (APGD-T, eq. 8). The
arithmetic of torchattacks 3.5.1's APGD / APGDT, checked against it by tests/test_autoattack.py.
Design notes: docs/design-notes.md, "odex/evaluate/apgd.py" (the checkpoints, the loss, two differences).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

RHO = 0.75


def _cross_entropy(logits, y, target):
    return F.cross_entropy(logits, y, reduction="none")


def _dlr_targeted(logits, y, target):
    """Croce & Hein's targeted DLR loss, larger when the target class gains on the true one."""
    ranked = logits.sort(dim=1).values
    idx = torch.arange(len(y), device=y.device)
    return -(logits[idx, y] - logits[idx, target]) / (ranked[:, -1] - 0.5 * ranked[:, -3] - 0.5 * ranked[:, -4] + 1e-12)


APGD_LOSSES = {"ce": _cross_entropy, "dlr_t": _dlr_targeted}


def l2_norms(v: torch.Tensor) -> torch.Tensor:
    """Per-image l2 norms, shaped to broadcast against `v`."""
    return (v ** 2).flatten(1).sum(1).sqrt().view(-1, *([1] * (v.dim() - 1)))


def _project(x, v, eps, norm, extra=0.0):
    """v projected onto the eps-ball around x and [0, 1] (torchattacks' expressions, `extra` its
    1e-12 on the second l2 projection)."""
    if norm == "linf":
        return torch.minimum(torch.maximum(v, x - eps), x + eps).clamp(0.0, 1.0)
    d = v - x
    n = l2_norms(d)
    return (x + d / (n + 1e-12) * torch.minimum(torch.full_like(x, eps), n + extra)).clamp(0.0, 1.0)


def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
         steps: int = 100, loss: str = "ce", target_rank: int | None = None, rho: float = RHO,
         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One run of APGD on (x, y): returns (adversarial images, still-correct mask). The images are
    the last iterate that was misclassified where there was one, else the best-loss start point.
    `loss="dlr_t"` needs `target_rank` (2 = the runner-up class at x). The caller puts the model in
    eval mode with frozen parameters (odex.evaluate.attacks.attack_mode) and enables gradients."""
    loss_fn = APGD_LOSSES[loss]      # norm and steps: odex/schema.py AutoAttackAccuracy, before the run
    n = len(x)
    view = (-1, *([1] * (x.dim() - 1)))
    steps_2, steps_min, size_decr = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)

    ones = torch.ones((n, *view[1:]), device=x.device, dtype=x.dtype)
    # random start on the sphere of radius eps (l-inf: the box's surface along the largest coordinate)
    if norm == "linf":
        t = 2 * torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) - 1
        x_adv = x + eps * ones * t / t.flatten(1).abs().max(1, keepdim=True)[0].view(view)
    else:
        t = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_adv = x + eps * ones * t / (l2_norms(t) + 1e-12)
    x_adv = x_adv.clamp(0.0, 1.0)
    x_best, x_best_adv = x_adv.clone(), x_adv.clone()
    loss_steps = torch.zeros(steps, n, device=x.device, dtype=x.dtype)

    target = None
    if loss == "dlr_t":
        with torch.no_grad():
            target = model(x).sort(dim=1)[1][:, -target_rank]

    def loss_and_grad(point):
        point = point.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(point)
            per_example = loss_fn(logits, y, target)
            g = torch.autograd.grad(per_example.sum(), point)[0].detach()
        # a non-finite gradient entry gives no direction (an unstable solve's backward pass): no
        # step for that pixel, as in odex's PGD; else NaN images would count as adversarial
        g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
        return logits.detach(), per_example.detach(), g

    logits, loss_best, grad = loss_and_grad(x_adv)
    grad_best = grad.clone()
    acc = logits.max(1)[1] == y
    step_size = eps * ones * 2.0
    x_adv_old = x_adv.clone()
    k, counter = steps_2, 0
    loss_best_last_check = loss_best.clone()
    reduced_last_check = torch.ones(n, dtype=torch.bool, device=x.device)

    for i in range(steps):
        with torch.no_grad():
            grad2 = x_adv - x_adv_old
            x_adv_old = x_adv.clone()
            a = 0.75 if i > 0 else 1.0
            if norm == "linf":
                z = _project(x, x_adv + step_size * torch.sign(grad), eps, norm)
                x_adv = _project(x, x_adv + (z - x_adv) * a + grad2 * (1 - a), eps, norm)
            else:
                z = _project(x, x_adv + step_size * grad / (l2_norms(grad) + 1e-12), eps, norm)
                x_adv = _project(x, x_adv + (z - x_adv) * a + grad2 * (1 - a), eps, norm, extra=1e-12)

        logits, loss_now, grad = loss_and_grad(x_adv)
        with torch.no_grad():
            wrong = logits.max(1)[1] != y
            acc &= ~wrong
            x_best_adv = torch.where(wrong.view(view), x_adv, x_best_adv)
            loss_steps[i] = loss_now
            better = loss_now > loss_best
            x_best = torch.where(better.view(view), x_adv, x_best)
            grad_best = torch.where(better.view(view), grad, grad_best)
            loss_best = torch.where(better, loss_now, loss_best)

            counter += 1
            if counter == k:
                # the loss rose in at most rho k of the last k steps (row -1 is the unfilled last
                # row at the first checkpoint, as in the reference: zeros)
                rows = torch.tensor([(i - c) % steps for c in range(k)], device=x.device)
                prev = torch.tensor([(i - c - 1) % steps for c in range(k)], device=x.device)
                rises = (loss_steps[rows] > loss_steps[prev]).sum(0).to(x.dtype)
                halve = (rises <= k * rho) | (~reduced_last_check & (loss_best_last_check >= loss_best))
                reduced_last_check = halve
                loss_best_last_check = loss_best.clone()
                step_size = torch.where(halve.view(view), step_size / 2.0, step_size)
                x_adv = torch.where(halve.view(view), x_best, x_adv)
                grad = torch.where(halve.view(view), grad_best, grad)
                counter = 0
                k = max(k - size_decr, steps_min)
    return x_best_adv, acc
