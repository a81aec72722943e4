"""Guaranteed spectral-norm bounds (odex/evaluate/lipschitz.py) against exact norms of explicit matrices:
Gram iteration, the zero-padding argument, the dense SVD, the CPL layer gain, and the sound
certificate of a trained CPL network."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from odex.evaluate.lipschitz import (SAFETY, circular_conv_norm_bound, conv_norm_bound, dense_norm_bound,
                            gram_iteration_bound, layer_gain)
from odex.models.cpl import ConvexPotentialDense


def explicit_conv(weight: torch.Tensor, n: int, padding_mode: str = "zeros") -> torch.Tensor:
    """The 3x3 padding-1 convolution on cin x n x n images as an explicit (cout n^2) x (cin n^2)
    matrix: the convolution applied to every basis image, with the given padding."""
    cin = weight.shape[1]
    basis = torch.eye(cin * n * n, dtype=torch.float64).view(-1, cin, n, n)
    if padding_mode == "zeros":
        out = F.conv2d(basis, weight.double(), padding=1)
    else:
        out = F.conv2d(F.pad(basis, (1, 1, 1, 1), mode="circular"), weight.double())
    return out.flatten(1).T


def exact_norm(matrix: torch.Tensor) -> float:
    return torch.linalg.matrix_norm(matrix.double(), 2).item()


def test_gram_iteration_bounds_matrices_from_above_and_tightens():
    g = torch.Generator().manual_seed(0)
    mats = torch.randn(20, 7, 11, generator=g, dtype=torch.float64)
    exact = torch.linalg.matrix_norm(mats, 2)
    previous = None
    for iters in (1, 2, 4, 8, 12):
        bound = gram_iteration_bound(mats, iters)
        assert (bound >= exact).all()
        # (sum_i sigma_i^(2^t))^(1/2^t) <= rank^(1/2^t) sigma_1, rank 7, t = iters
        assert (bound <= exact * 7 ** (1 / 2 ** iters) * SAFETY * (1 + 1e-12)).all()
        if previous is not None:
            assert (bound <= previous * (1 + 1e-12)).all()
        previous = bound
    assert (previous / exact).max().item() < 1 + 2e-6
    # complex matrices (the DFT blocks) and a huge scale (no overflow thanks to the rescaling)
    z = torch.randn(5, 3, 4, generator=g, dtype=torch.complex128) * 1e200
    assert torch.allclose(gram_iteration_bound(z) / torch.linalg.matrix_norm(z, 2), torch.tensor(SAFETY, dtype=torch.float64))


@pytest.mark.parametrize("n", [5, 8])
def test_conv_bound_against_the_explicit_zero_padded_matrix(n):
    """bound >= exact for every kernel; within 1 + 1/n (the zero-padded norm approaches the
    circular one as the image grows: measured <= 1.14 at n = 5, 1.08 at n = 8, 1.0035 at n = 32)."""
    g = torch.Generator().manual_seed(n)
    for cin in (1, 2, 4):
        for _ in range(4):
            w = torch.randn(5, cin, 3, 3, generator=g)
            exact = exact_norm(explicit_conv(w, n))
            bound = conv_norm_bound(w, (n, n), padding=1).item()
            assert exact <= bound <= exact * (1 + 1 / n)


def test_circular_bound_is_the_circular_norm_and_the_argument_needs_the_larger_grid():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(5, 3, 3, 3, generator=g)
    for n in (4, 6):
        exact = exact_norm(explicit_conv(w, n, "circular"))
        assert circular_conv_norm_bound(w, (n, n)).item() == pytest.approx(exact * SAFETY, rel=1e-9)
    # The circular norm on the image's own n x n grid is NOT a bound for zero padding in general;
    # the (n + 1) grid is. The second difference [1, -2, 1] along rows on 5 x 5 images: zero-padded
    # norm 2 + 2 cos(pi / 6) = 3.732, circular on 5 x 5 2 + 2 cos(pi / 5) = 3.618, on 6 x 6 it is 4.
    w = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 1.0], [0.0, 0.0, 0.0]]).view(1, 1, 3, 3)
    zero = exact_norm(explicit_conv(w, 5))
    assert zero == pytest.approx(2 + 2 * math.cos(math.pi / 6), rel=1e-12)
    assert circular_conv_norm_bound(w, (5, 5)).item() < zero
    assert conv_norm_bound(w, (5, 5), padding=1).item() == pytest.approx(4.0 * SAFETY, rel=1e-12)


def test_dense_bound_is_the_largest_singular_value():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(30, 50, generator=g)
    exact = exact_norm(w)
    assert exact <= dense_norm_bound(w).item() <= exact * (1 + 2e-6)


def test_layer_gain_covers_an_underestimated_sigma():
    """A dense CPL layer whose power-iteration sigma is 1% low is more than 1-Lipschitz; its
    guaranteed gain covers the ratio measured along the top singular direction, where every unit
    is active and the layer is linear with gain |1 - h ||W||^2|."""
    torch.manual_seed(3)
    layer = ConvexPotentialDense(12, 20, eval_iters=2000).double().eval()
    with torch.no_grad():
        layer.linear.bias.fill_(1e3)
    x = torch.randn(1, 12, dtype=torch.float64)
    layer(x)
    assert layer.gain_bound().item() == pytest.approx(1.0, abs=1e-4)
    layer._sigma_eval = layer._sigma_eval * 0.99
    layer._gain = None
    v = layer.u / layer.u.norm()
    with torch.no_grad():
        ratio = ((layer(x + 1e-2 * v) - layer(x)).norm() / 1e-2).item()
    gain = layer.gain_bound().item()
    assert ratio > 1.03 and gain >= ratio
    assert gain == pytest.approx(ratio, rel=1e-5)      # exact here, up to SAFETY
    assert layer_gain(2.0, torch.tensor(1.0)).item() == 1.0


def test_trained_cpl_layers_bounds_against_explicit_matrices(trained_cpl):
    """The layers of a trained tiny CPL net on the 8x8 digits: each bound >= the exact norm of its
    explicit operator (the model's own zero-padded op()), within 1 + 1/8; and the power iteration's
    estimate is never above the exact norm."""
    net, _, _ = trained_cpl
    for layer in (*net.conv, *net.dense):
        if hasattr(layer, "image_size"):               # a convolution: its explicit matrix
            c, h, _ = layer.u.shape[1:]
            basis = torch.eye(c * h * h, dtype=torch.float64).view(-1, c, h, h)
            matrix = layer.double().op(basis).flatten(1).T
            layer.float()
            factor = 1 + 1 / h
        else:
            matrix = layer.linear.weight.double()
            factor = 1 + 2e-6
        exact = exact_norm(matrix)
        bound = layer.norm_bound().item()
        assert exact <= bound <= exact * factor
        assert layer.sigma().item() <= exact * (1 + 1e-6)


def test_sound_certificate_and_power_iteration_figure(trained_cpl):
    net, x, _ = trained_cpl
    bound = net.lipschitz_bound().item()
    assert bound >= 1.0
    with torch.no_grad():
        logits = net(x)
        sound, paper = net.certified_radius(logits), net.power_iteration_radius(logits)
    assert torch.allclose(sound * bound, paper.double(), rtol=1e-6)
    # the network's measured gain along random and nearby pairs stays below the sound bound
    g = torch.Generator().manual_seed(4)
    a = x[:64]
    b = (a + 0.05 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    with torch.no_grad():
        ratio = ((net(a) - net(b)).norm(dim=1) / (a - b).flatten(1).norm(dim=1)).max().item()
    assert ratio <= bound
