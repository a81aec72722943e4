"""Guaranteed upper bounds of spectral norms (for sound Lipschitz certificates): power iteration
approaches ||W||_2 from below, so a certificate built on it is not a guarantee. Dense layers: the
exact largest singular value (SVD, float64). Stride-1 zero-padded convolutions: Gram iteration
(Delattre, Barthelemy, Araujo, Allauzen, ICML 2023, arXiv 2305.16173) per DFT frequency of the
kernel on the grid enlarged by the padding, with G_1 = A, G_{t+1} = G_t^H G_t,

    sigma_1(A) <= ||G_t||_F^(1 / 2^(t-1))     for every t.

Every bound is multiplied by `SAFETY` (float64 rounding). Design notes: docs/design-notes.md,
"odex/evaluate/lipschitz.py" (the bound, the zero-padding argument, rounding).
"""
from __future__ import annotations

import torch

SAFETY = 1.0 + 1e-6     # covers float64 rounding (relative errors < 1e-10 here) many times over


def gram_iteration_bound(mats: torch.Tensor, iters: int = 12) -> torch.Tensor:
    """Per matrix of the batch `mats` (..., m, n), real or complex: an upper bound of its largest
    singular value, ||G_t||_F^(1/2^(t-1)) after t = `iters` Gram steps (float64), times SAFETY."""
    if iters < 1:
        raise ValueError(f"Gram iteration needs iters >= 1, got {iters}")
    g = mats.to(torch.complex128 if mats.is_complex() else torch.float64)
    if g.shape[-2] > g.shape[-1]:           # the same singular values; start from the smaller Gram
        g = g.mT
    # first by the largest entry: a Frobenius norm of entries near 1e200 would overflow
    top = g.abs().amax(dim=(-2, -1)).clamp_min(1e-300)
    g = g / top[..., None, None]
    log_scale = torch.log(top)
    # invariant: G_t(true) = exp(log_scale) * g, with sigma_1(G_t) = sigma_1(A)^(2^(t-1))
    for t in range(1, iters):
        norm = torch.linalg.matrix_norm(g, "fro").clamp_min(1e-300)
        g = g / norm[..., None, None]
        log_scale = log_scale + torch.log(norm)
        g = g @ g.mH
        log_scale = 2 * log_scale
    log_fro = log_scale + torch.log(torch.linalg.matrix_norm(g, "fro").clamp_min(1e-300))
    return torch.exp(log_fro / 2 ** (iters - 1)) * SAFETY


def dense_norm_bound(weight: torch.Tensor) -> torch.Tensor:
    """||W||_2 of a (out, in) matrix by an SVD in float64, times SAFETY (a scalar tensor)."""
    return torch.linalg.matrix_norm(weight.detach().to(torch.float64), ord=2) * SAFETY


def circular_conv_norm_bound(weight: torch.Tensor, grid: tuple[int, int], iters: int = 12) -> torch.Tensor:
    """An upper bound of the l2 operator norm of the circular convolution with `weight`
    (cout, cin, kh, kw) on images of `grid` = (N, M) pixels: the largest Gram-iteration bound over
    the DFT frequencies (a scalar tensor, float64)."""
    cout, cin, kh, kw = weight.shape
    n, m = grid
    if kh > n or kw > m:
        raise ValueError(f"a {kh}x{kw} kernel does not fit a {n}x{m} circular grid")
    spectrum = torch.fft.fft2(weight.detach().to(torch.float64), s=(n, m))   # (cout, cin, N, M)
    mats = spectrum.permute(2, 3, 0, 1).reshape(n * m, cout, cin)
    return gram_iteration_bound(mats, iters).max()


def conv_norm_bound(weight: torch.Tensor, image_size: tuple[int, int], padding: int,
                    iters: int = 12) -> torch.Tensor:
    """An upper bound of ||conv||_2 for the stride-1 convolution with `weight`, zero `padding`
    on each side, on images of `image_size`: the circular bound on the grid enlarged by `padding`
    (why that holds: docs/design-notes.md)."""
    kh, kw = weight.shape[-2:]
    if padding > min(kh, kw) - 1:
        raise ValueError(f"padding {padding} > kernel size - 1: the embedding argument does not hold")
    h, w = image_size
    return circular_conv_norm_bound(weight, (max(h + padding, kh), max(w + padding, kw)), iters)


def layer_gain(step: torch.Tensor | float, norm_bound: torch.Tensor) -> torch.Tensor:
    """A guaranteed Lipschitz constant of z = x - step W^T relu(W x + b) given ||W||_2 <= norm_bound.

    Its Jacobian wherever it exists is J = I - step W^T D W, D diagonal in {0, 1}: symmetric, with
    eigenvalues in [1 - step ||W||^2, 1] (W^T D W is positive semi-definite, at most ||W||^2 I), so
    ||J||_2 <= max(1, step ||W||^2 - 1); the map is continuous and piecewise linear, so that bounds
    its Lipschitz constant. With step = 2 / sigma^2 and sigma = ||W|| it is exactly 1."""
    return torch.clamp(torch.as_tensor(step, dtype=torch.float64) * norm_bound.to(torch.float64) ** 2 - 1,
                       min=1.0)


__all__ = ["SAFETY", "gram_iteration_bound", "dense_norm_bound", "circular_conv_norm_bound",
           "conv_norm_bound", "layer_gain"]
