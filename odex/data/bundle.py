"""What every dataset loader returns, and the steps they all share (limits, validation split,
normalisation statistics)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from odex.errors import ConfigError


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know to fit a dataset."""
    name: str
    shape: tuple[int, ...]          # (C, H, W) for images, (D,) for vectors
    num_classes: int
    mean: tuple[float, ...]         # per channel (per feature for vectors), in [0, 1] pixel units
    std: tuple[float, ...]

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3

    @property
    def channels(self) -> int:
        return self.shape[0]


@dataclass
class Split:
    x: torch.Tensor                 # uint8 (pixels) or float32 in [0, 1]
    y: torch.Tensor                 # int64 labels

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class DataBundle:
    info: DataInfo
    train: Split
    test: Split
    val: Split | None = None
    batch_size: int = 128
    eval_batch_size: int = 1000
    augment: dict | None = field(default=None)   # kwargs of odex.data.batches.RandomCropFlip

    def to(self, device) -> "DataBundle":
        return replace(self, train=self.train.to(device), test=self.test.to(device),
                       val=None if self.val is None else self.val.to(device))


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def make_bundle(name: str, train_x, train_y, test_x, test_y, num_classes: int, *,
                batch_size: int = 128, eval_batch_size: int = 1000, val_fraction: float = 0.0,
                limit_train: int | None = None, limit_test: int | None = None,
                split_seed: int = 0, augment: dict | bool | None = None) -> DataBundle:
    """Apply the keys every dataset config has, in a fixed order: the validation part is held out
    of the training set by a seeded permutation (the same for every job of a sweep), then
    `limit_train` / `limit_test` keep the first examples (quick runs). The keys' ranges: odex/schema.py
    DatasetCommon, checked before the run; what depends on the data read is checked here."""
    train_y = torch.as_tensor(train_y, dtype=torch.long)
    test_y = torch.as_tensor(test_y, dtype=torch.long)
    val = None
    if val_fraction > 0:
        g = torch.Generator().manual_seed(split_seed)
        perm = torch.randperm(len(train_y), generator=g)
        n_val = max(1, int(round(val_fraction * len(train_y))))
        val = Split(train_x[perm[:n_val]], train_y[perm[:n_val]])
        train_x, train_y = train_x[perm[n_val:]], train_y[perm[n_val:]]
    if limit_train is not None:
        train_x, train_y = train_x[:limit_train], train_y[:limit_train]
    if limit_test is not None:
        test_x, test_y = test_x[:limit_test], test_y[:limit_test]
    if len(train_y) == 0 or len(test_y) == 0:
        raise ConfigError(f"dataset {name}: empty train or test split (check limit_train/limit_test)")

    xf = to_unit_float(train_x)
    dims = (0, 2, 3) if xf.dim() == 4 else (0,)
    mean = tuple(xf.mean(dim=dims).tolist())
    std = tuple(xf.std(dim=dims).clamp_min(1e-3).tolist())
    info = DataInfo(name, tuple(train_x.shape[1:]), num_classes, mean, std)
    augment = {} if augment is True else dict(augment) if augment else None
    if augment is not None and not info.is_image:
        raise ConfigError(f"dataset {name}: augment (random crop + flip) needs images")
    return DataBundle(info, Split(train_x, train_y), Split(test_x, test_y), val,
                      batch_size, eval_batch_size, augment)
