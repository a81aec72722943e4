"""Batches made on the device the data lives on: no DataLoader, no worker processes.

The whole split is one tensor (uint8 pixels or float32); an epoch is one `randperm` on the device
and a slice per batch, converted to float in [0, 1] and augmented there. Nothing here reads a
value back to the host, so iterating costs no GPU synchronisation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from odex.data.bundle import Split, to_unit_float


class RandomCropFlip:
    """Random crop after padding by `padding` pixels, and a random horizontal flip, per image.

    `pad_mode` is F.pad's mode: "constant" (zeros, the usual CIFAR recipe) or "reflect" (the CPL
    recipe). Set `flip: false` for digits (SVHN), where a mirrored digit is another symbol.
    """

    def __init__(self, padding: int = 4, flip: bool = True, pad_mode: str = "constant"):
        self.padding = padding
        self.flip = flip
        self.pad_mode = pad_mode

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        dev = x.device
        if self.padding > 0:
            p = self.padding
            c = x.shape[1]
            xp = F.pad(x, (p, p, p, p), mode=self.pad_mode)
            oy = torch.randint(0, 2 * p + 1, (b, 1, 1, 1), device=dev, generator=generator)
            ox = torch.randint(0, 2 * p + 1, (b, 1, 1, 1), device=dev, generator=generator)
            # per-image offsets: gather h rows starting at oy, then w columns starting at ox
            rows = (oy + torch.arange(h, device=dev).view(1, 1, h, 1)).expand(b, c, h, xp.shape[3])
            cols = (ox + torch.arange(w, device=dev).view(1, 1, 1, w)).expand(b, c, h, w)
            x = xp.gather(2, rows).gather(3, cols)
        if self.flip:
            mask = torch.rand((b, 1, 1, 1), device=dev, generator=generator) < 0.5
            x = torch.where(mask, x.flip(3), x)
        return x


class Batches:
    """Iterate over (x, y) batches of a split that already sits on its device."""

    def __init__(self, split: Split, batch_size: int, *, shuffle: bool = False,
                 generator: torch.Generator | None = None, augment: RandomCropFlip | None = None,
                 drop_last: bool = False):
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.augment = augment
        self.drop_last = drop_last

    def __len__(self) -> int:
        n, b = len(self.split), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self):
        x, y = self.split.x, self.split.y
        n = len(y)
        perm = torch.randperm(n, device=y.device, generator=self.generator) if self.shuffle else None
        for k in range(len(self)):
            s = slice(k * self.batch_size, min((k + 1) * self.batch_size, n))
            idx = s if perm is None else perm[s]
            xb, yb = to_unit_float(x[idx]), y[idx]
            if self.augment is not None:
                xb = self.augment(xb, self.generator)
            yield xb, yb
