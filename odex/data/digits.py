"""scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes): the default dataset,
shipped inside scikit-learn, so a fresh machine trains with no download."""
from __future__ import annotations

import torch

from odex.data.bundle import DataBundle, make_bundle


def digits(*, test_fraction: float = 0.2, split_seed: int = 0, **common) -> DataBundle:
    """A fixed, seeded train/test split (80/20 by default) of `sklearn.datasets.load_digits`."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = torch.tensor(raw.images, dtype=torch.float32).div_(16.0).unsqueeze(1)   # (N, 1, 8, 8), [0, 1]
    y = torch.tensor(raw.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(split_seed))
    n_test = int(round(test_fraction * len(y)))
    test, train = perm[:n_test], perm[n_test:]
    return make_bundle("digits", x[train], y[train], x[test], y[test], 10, split_seed=split_seed, **common)
