"""The Square attack: Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient
black-box adversarial attack via random search", ECCV 2020 (Algorithms 1-3).

Gradient-free random search on the margin loss L(x) = z_y(x) - max_{i != y} z_i(x): each query
proposes a change of one square window, kept when it lowers L; the window shrinks with the schedule
p(i). After torchattacks 3.5.1's `Square`, but the broken images leave the batch every
`compact_every` queries (one read-back each), so random draws differ from torchattacks'.
Design notes: docs/design-notes.md, "odex/evaluate/square.py" (the proposals per norm, the schedule).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from odex.errors import ConfigError
from odex.evaluate.apgd import l2_norms

# p(i): the fraction of p_init at query i of 10,000 (Andriushchenko et al., their code's schedule)
_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))


def p_selection(p_init: float, i: int, queries: int) -> float:
    """The fraction of pixels a proposal changes at query `i` of `queries`."""
    it = int(i / queries * 10000)
    for bound, div in _SCHEDULE:
        if it <= bound:
            return p_init / div
    return p_init / 512


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{i != y} z_i: > 0 while the image is classified correctly."""
    z_y = logits.gather(1, y[:, None])[:, 0]
    others = logits.scatter(1, y[:, None], float("-inf")).max(1).values
    return z_y - others


def _eta_rectangles(h: int, w: int, device, dtype) -> torch.Tensor:
    """Concentric rectangles with weights 1/(r + 1)^2, unit l2 norm (the l2 attack's building block)."""
    delta = torch.zeros(h, w, device=device, dtype=dtype)
    ch, cw = h // 2, w // 2
    for r in range(max(ch + 1, cw + 1)):
        delta[max(ch - r, 0):min(ch - r + 2 * r + 1, h), max(cw - r, 0):min(cw - r + 2 * r + 1, w)] += 1.0 / (r + 1) ** 2
    return delta / delta.pow(2).sum().sqrt()


def eta(s: int, host: torch.Generator, device, dtype) -> torch.Tensor:
    """An s x s block: +rectangles on one half, -rectangles on the other, randomly transposed
    (the coin from the host generator `host`)."""
    delta = torch.zeros(s, s, device=device, dtype=dtype)
    delta[: s // 2] = _eta_rectangles(s // 2, s, device, dtype)
    delta[s // 2:] = -_eta_rectangles(s - s // 2, s, device, dtype)
    delta = delta / delta.pow(2).sum().sqrt()
    if torch.rand(1, generator=host).item() > 0.5:
        delta = delta.t()
    return delta


def _signs(shape, generator, like) -> torch.Tensor:
    return torch.sign(2 * torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype) - 1)


def _corner(limit: int, host: torch.Generator) -> int:
    """A window corner in [0, limit) (0 when the window fills the side), from the host generator."""
    return int(torch.rand(1, generator=host).item() * limit) if limit > 0 else 0


def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
           queries: int = 5000, p_init: float = 0.8, seed: int = 0, compact_every: int = 20) -> torch.Tensor:
    """Adversarial images for (x, y) (N x C x H x W in [0, 1]) within the `norm` ball of radius
    `eps`, after at most `queries` forward passes per image. Images the model gets wrong at the
    start are left as they are (they need no attack). `seed` seeds a generator on x's device (the
    signs) and one on the host (window corners, block transposes: no device read-back per query).
    The model is queried as it is: the caller sets eval mode."""
    if x.dim() != 4:           # norm and queries: odex/schema.py SquareAccuracy, before the run
        raise ConfigError(f"Square attacks images (N x C x H x W), got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    dev, dt = x.device, x.dtype
    generator = torch.Generator(device=dev).manual_seed(seed)
    host = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if norm == "linf":
            x_best = (x + eps * _signs((n, c, 1, w), generator, x)).clamp(0.0, 1.0)
        else:
            s = max(h // 5, 1)
            start = (h - s * 5) // 2
            delta = torch.zeros_like(x)
            for vh in range(start, start + s * (h // s), s):
                for vw in range(start, start + s * (w // s), s):
                    delta[:, :, vh:vh + s, vw:vw + s] += eta(s, host, dev, dt).view(1, 1, s, s) * \
                        _signs((n, c, 1, 1), generator, x)
            x_best = (x + delta / (l2_norms(delta) + 1e-12) * eps).clamp(0.0, 1.0)
        m_best = margin(model(x_best), y)
        correct = margin(model(x), y) > 0
        x_best = torch.where(correct.view(-1, 1, 1, 1), x_best, x)
        m_best = torch.where(correct, m_best, m_best.new_full((), -1.0))
        idx = torch.arange(n, device=dev)
        n_features = c * h * w
        for i in range(queries):
            if i % compact_every == 0:              # drop the broken images (one read-back)
                idx = idx[m_best[idx] > 0]
                if len(idx) == 0:
                    break
            xc, xb, yc = x[idx], x_best[idx], y[idx]
            p = p_selection(p_init, i, queries)
            if norm == "linf":
                s = min(max(int(round(math.sqrt(p * n_features / c))), 1), h, w)
                vh, vw = _corner(h - s, host), _corner(w - s, host)
                proposal = xb.clone()
                proposal[:, :, vh:vh + s, vw:vw + s] = xb[:, :, vh:vh + s, vw:vw + s] + \
                    2.0 * eps * _signs((len(idx), c, 1, 1), generator, x)
                proposal = torch.minimum(torch.maximum(proposal, xc - eps), xc + eps).clamp(0.0, 1.0)
            else:
                s = max(int(round(math.sqrt(p * n_features / c))), 3)
                s += 1 - s % 2                          # odd
                s = min(s, h, w)
                d = xb - xc
                vh, vw = _corner(h - s, host), _corner(w - s, host)
                vh2, vw2 = _corner(h - s, host), _corner(w - s, host)
                window = d[:, :, vh:vh + s, vw:vw + s]
                mask = torch.zeros_like(d)
                mask[:, :, vh:vh + s, vw:vw + s] = 1.0
                mask[:, :, vh2:vh2 + s, vw2:vw2 + s] = 1.0
                # the l2 mass of both windows and the budget left over, moved into the first window
                budget = ((eps ** 2 - l2_norms(d) ** 2).clamp_min(0.0) / c + l2_norms(d * mask) ** 2).sqrt()
                new = eta(s, host, dev, dt).view(1, 1, s, s) * _signs((len(idx), c, 1, 1), generator, x)
                new = new + window / (window.pow(2).sum((-2, -1), keepdim=True).sqrt() + 1e-12)
                new = new / (new.pow(2).sum((-2, -1), keepdim=True).sqrt() + 1e-12) * budget
                d = d.clone()
                d[:, :, vh2:vh2 + s, vw2:vw2 + s] = 0.0
                d[:, :, vh:vh + s, vw:vw + s] = new
                proposal = (xc + d / (l2_norms(d) + 1e-12) * eps).clamp(0.0, 1.0)
            m = margin(model(proposal), yc)
            # kept when it lowers the margin (which includes every misclassification: an image
            # still attacked has a positive margin); images broken since the last compaction rest
            alive = m_best[idx]
            keep = (m < alive) & (alive > 0)
            m_best[idx] = torch.where(keep, m, alive)
            x_best[idx] = torch.where(keep.view(-1, 1, 1, 1), proposal, xb)
    return x_best
