"""Nested spheres (Dupont, Doucet, Teh, "Augmented Neural ODEs", NeurIPS 2019).

Class 0: points with norm in [0, r1]; class 1: points with norm in [r2, r3], r1 < r2. A neural ODE
on R^d is a homeomorphism and cannot pull the inner ball out of the surrounding shell; augmenting
the state with zero dimensions (model.augment_dim > 0) lets it. Generated, no download.
"""
from __future__ import annotations

import torch

from odex.data.bundle import DataBundle, make_bundle


def _sample(n: int, dim: int, r_lo: float, r_hi: float, g: torch.Generator) -> torch.Tensor:
    direction = torch.randn(n, dim, generator=g)
    direction = direction / direction.norm(dim=1, keepdim=True)
    # uniform in radius, as in the paper's code
    radius = r_lo + (r_hi - r_lo) * torch.rand(n, 1, generator=g)
    return direction * radius


def spheres(*, dim: int = 2, n_train: int = 2000, n_test: int = 1000, inner_radius: float = 0.5,
            outer_range: tuple[float, float] = (1.0, 1.5), seed: int = 0, **common) -> DataBundle:
    g = torch.Generator().manual_seed(seed)

    def make(n: int):
        n_in = n // 3            # a third inside, two thirds in the shell, as in Dupont et al.
        x = torch.cat([_sample(n_in, dim, 0.0, inner_radius, g),
                       _sample(n - n_in, dim, outer_range[0], outer_range[1], g)])
        y = torch.cat([torch.zeros(n_in, dtype=torch.long), torch.ones(n - n_in, dtype=torch.long)])
        perm = torch.randperm(n, generator=g)
        return x[perm], y[perm]

    train_x, train_y = make(n_train)
    test_x, test_y = make(n_test)
    return make_bundle("spheres", train_x, train_y, test_x, test_y, 2, **common)
