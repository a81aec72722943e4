"""FAB-T, the targeted Fast Adaptive Boundary attack of AutoAttack's standard set: Croce & Hein,
"Minimally distorted adversarial examples with a fast adaptive boundary attack", ICML 2020.

A minimum-norm attack: with f(x) = z_t(x) - z_y(x) (t the `target_rank`-th largest clean logit)
linearised at x_k, the iterate and the clean image x_0 are projected onto the hyperplane within the
box [0, 1] (`project`: d_k, d_0) and mixed,

    x_{k+1} = clip_[0,1]((1 - a)(x_k + eta d_k) + a (x_0 + eta d_0)),  a = min(|d_k| / (|d_k| + |d_0|), alpha_max);

a misclassified x_{k+1} is kept if closest to x_0 so far and pulled back, x_0 + beta (x_{k+1} - x_0).
Checked against torchattacks 3.5.1 (tests/test_fab.py). Design notes: docs/design-notes.md,
"odex/evaluate/fab.py" (the projection in closed form, the constants, why our own code).
"""
from __future__ import annotations

import torch
from torch import nn

ETA, BETA, ALPHA_MAX = 1.05, 0.9, 0.1


def _norm(v: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-row l-inf or l2 norm of a flattened batch."""
    return v.abs().amax(1) if norm == "linf" else v.pow(2).sum(1).sqrt()


def project(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    """The minimal l-inf or l2 move d (rows of a flattened batch) with <w, x + d> = b and
    0 <= x + d <= 1, or the box corner nearest the hyperplane where it lies beyond the box."""
    c = b - (w * x).sum(1)
    # direction of each coordinate's move, and its room before the box bound in that direction
    direction = torch.sign(w) * torch.where(c >= 0, 1.0, -1.0).unsqueeze(1)
    room = torch.where(direction > 0, 1 - x, x).clamp_min(0)
    free = w.abs() > 1e-8                                     # a zero weight cannot help: no move
    aw = torch.where(free, w.abs(), torch.zeros_like(w))
    if norm == "linf":
        v, s = aw, room
    else:
        v, s = aw ** 2, torch.where(free, room / aw.clamp_min(1e-8), torch.full_like(room, 1e30))
    s_sorted, order = s.sort(1)
    v_sorted = v.gather(1, order)
    # at tau = s_sorted[k]: the k smaller breakpoints saturated, the rest moving by tau
    saturated = torch.cumsum(v_sorted * s_sorted, 1) - v_sorted * s_sorted    # sum over j < k
    moving = v_sorted.flip(1).cumsum(1).flip(1)                               # sum over j >= k
    reach = saturated + moving * s_sorted
    need = c.abs().unsqueeze(1)
    k = (reach < need).sum(1, keepdim=True)                   # the first breakpoint that reaches |c|
    inside = k < s.shape[1]
    kk = k.clamp_max(s.shape[1] - 1)
    tau = ((need - saturated.gather(1, kk)) / moving.gather(1, kk).clamp_min(1e-30)).clamp_min(0)
    tau = torch.where(inside, tau, torch.full_like(tau, 1e30))   # beyond the box: the whole room
    move = torch.minimum(tau, room) if norm == "linf" else torch.minimum(tau * aw, room)
    return torch.where(free, direction * move, torch.zeros_like(move))


def fab_t(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
          steps: int = 100, target_rank: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """One FAB-T run towards the class of the `target_rank`-th largest clean logit: returns (images,
    still-robust mask). The images are the closest misclassified ones found where they lie within
    eps of x (l-inf or l2), else x. The caller puts the model in eval mode with frozen parameters
    (odex.evaluate.attacks.attack_mode)."""
    n = len(x)
    view = (-1, *([1] * (x.dim() - 1)))
    idx = torch.arange(n, device=x.device)
    with torch.no_grad():
        target = model(x).sort(1)[1][:, -target_rank]
    x0 = x.flatten(1)
    xk = x.clone()
    best = x.clone()
    best_dist = torch.full((n,), float("inf"), device=x.device, dtype=x.dtype)
    for _ in range(steps):
        point = xk.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(point)
            f = logits[idx, target] - logits[idx, y]
            g = torch.autograd.grad(f.sum(), point)[0]
        # a non-finite gradient (an unstable solve's backward pass) gives no direction: no move there
        g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0).flatten(1)
        with torch.no_grad():
            f = torch.nan_to_num(f.detach(), nan=0.0, posinf=0.0, neginf=0.0)
            w, b = g, (g * xk.flatten(1)).sum(1) - f
            d = project(torch.cat((xk.flatten(1), x0)), torch.cat((w, w)), torch.cat((b, b)), norm)
            d_k, d_0 = d[:n], d[n:]
            size = _norm(d, norm).clamp_min(1e-8)
            a = (size[:n] / (size[:n] + size[n:])).clamp(0, ALPHA_MAX).view(view)
            xk = ((xk + ETA * d_k.view_as(x)) * (1 - a) + (x + ETA * d_0.view_as(x)) * a).clamp(0.0, 1.0)
            wrong = model(xk).argmax(1) != y
            dist = _norm((xk - x).flatten(1), norm)
            closer = wrong & (dist < best_dist)
            best = torch.where(closer.view(view), xk, best)
            best_dist = torch.where(closer, dist, best_dist)
            xk = torch.where(wrong.view(view), x + BETA * (xk - x), xk)
    broken = best_dist <= eps
    return torch.where(broken.view(view), best, x), ~broken
