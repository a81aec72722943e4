"""The real image datasets, read by torchvision's own readers and kept as uint8 tensors.

A dataset missing from `root` (with `download: false`, or with no network) raises one
`DatasetNotFound` naming the dataset, the folder looked in and the command that fetches it, instead
of a traceback from inside torchvision.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from odex.errors import ConfigError, DataFileError, DatasetNotFound
from odex.data.bundle import DataBundle, make_bundle

# where torchvision's reader looks under root, for the error message
_LAYOUT = {
    "mnist": "MNIST/raw",
    "fashion_mnist": "FashionMNIST/raw",
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
    "svhn": "train_32x32.mat and test_32x32.mat",
}


def _open(name: str, reader, root: str, download: bool, **kwargs):
    root = os.path.expanduser(str(root))
    try:
        return reader(root=root, download=download, **kwargs)
    except (RuntimeError, OSError, ValueError, EOFError) as e:   # not found, corrupted, or no network
        where = Path(root).resolve()
        layout = where / _LAYOUT[name].split(" ")[0]
        if not download and layout.exists() and any(layout.iterdir() if layout.is_dir() else [layout]):
            raise DataFileError(
                f"dataset {name!r}: the files in {layout} cannot be read ({type(e).__name__}: "
                f"{' '.join(str(e).split())[:150]}): they are truncated or damaged; delete them and fetch "
                f"them again: `python -m odex.data {name} --root {root}`") from e
        why = "download failed (no network?)" if download else "not found"
        raise DatasetNotFound(
            f"dataset {name!r} {why}: torchvision looked in {where} for {_LAYOUT[name]}. "
            f"Fetch it on a machine with internet: `python -m odex.data {name} --root {root}` "
            f"(or add dataset.download=true to the odex-train command), then copy the folder here."
        ) from e


def _tensor(a) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))


def _train_test(name: str, reader_name: str, classes: int, root: str, download: bool, hwc: bool,
                **common) -> DataBundle:
    """A torchvision dataset with a train and a test part, its images (N, H, W) or, `hwc`, (N, H, W, C)."""
    import torchvision

    reader = getattr(torchvision.datasets, reader_name)
    train = _open(name, reader, root, download, train=True)
    test = _open(name, reader, root, download, train=False)
    chw = (lambda d: _tensor(d).permute(0, 3, 1, 2).contiguous()) if hwc else (lambda d: d.unsqueeze(1))
    return make_bundle(name, chw(train.data), train.targets, chw(test.data), test.targets, classes, **common)


def mnist(*, root: str = "data", download: bool = False, **common) -> DataBundle:
    return _train_test("mnist", "MNIST", 10, root, download, False, **common)


def fashion_mnist(*, root: str = "data", download: bool = False, **common) -> DataBundle:
    return _train_test("fashion_mnist", "FashionMNIST", 10, root, download, False, **common)


def mnist_t10k(*, root: str = "data", download: bool = False, train_size: int = 8000,
               **common) -> DataBundle:
    """Only the 10,000-image MNIST test set, split into the first `train_size` images for training
    and the rest for testing: a real-data check where only the t10k files are at hand.

    Reads root/MNIST/raw/t10k-{images-idx3,labels-idx1}-ubyte (gunzipping the .gz files there if
    only those exist) with torchvision's IDX readers; torchvision's MNIST class itself would insist
    on the training files too.
    """
    from torchvision.datasets.mnist import read_image_file, read_label_file

    if download:
        _open("mnist", __import__("torchvision").datasets.MNIST, root, True, train=False)
    raw = Path(os.path.expanduser(str(root))) / "MNIST" / "raw"
    paths = []
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        path = raw / stem
        if not path.is_file() and path.with_suffix(".gz").is_file():
            _gunzip(path.with_suffix(".gz"), path)
        if not path.is_file():
            raise DatasetNotFound(
                f"dataset 'mnist_t10k' not found: looked in {raw.resolve()} for {stem}[.gz]. "
                f"Fetch MNIST on a machine with internet: `python -m odex.data mnist --root {root}`, "
                f"or copy the two t10k files there.")
        paths.append(path)
    try:
        x, y = read_image_file(str(paths[0])).unsqueeze(1), read_label_file(str(paths[1]))
    except (RuntimeError, ValueError, OSError, AssertionError) as e:
        raise DataFileError(
            f"dataset 'mnist_t10k': {paths[0]} or {paths[1]} cannot be read ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:120]}): truncated or damaged; delete it and put the good file (or its "
            f".gz) back") from None
    if len(x) != len(y) or len(y) < 2:
        raise DataFileError(f"dataset 'mnist_t10k': {paths[0]} holds {len(x)} images and {paths[1]} {len(y)} "
                            "labels: a file is truncated; delete it and put the good file (or its .gz) back")
    if train_size >= len(y):
        raise ConfigError(f"dataset.train_size={train_size}: must be < the {len(y)} images of the t10k files "
                          "(the rest is the test split)")
    return make_bundle("mnist_t10k", x[:train_size], y[:train_size], x[train_size:], y[train_size:],
                       10, **common)


def _gunzip(gz: Path, path: Path) -> None:
    """Decompress `gz` next to itself: into a temporary file, renamed to `path` only when the whole
    stream decompressed, so a truncated or corrupt .gz never leaves a half file behind that would
    keep failing once the good .gz is back."""
    import gzip
    import shutil
    import tempfile
    import zlib

    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    except OSError as e:
        raise DataFileError(f"cannot decompress {gz}: its folder is not writable ({e.strerror}); decompress it "
                            f"elsewhere (gunzip -k) and copy {path.name} there") from None
    try:
        with gzip.open(gz, "rb") as src, os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, path)
    except (OSError, EOFError, zlib.error) as e:
        Path(tmp).unlink(missing_ok=True)
        raise DataFileError(f"{gz} is truncated or corrupt ({type(e).__name__}: {' '.join(str(e).split())[:100]}): "
                            "delete it and fetch it again (python -m odex.data mnist --root <root>)") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cifar10(*, root: str = "data", download: bool = False, **common) -> DataBundle:
    return _train_test("cifar10", "CIFAR10", 10, root, download, True, **common)


def cifar100(*, root: str = "data", download: bool = False, **common) -> DataBundle:
    return _train_test("cifar100", "CIFAR100", 100, root, download, True, **common)


def svhn(*, root: str = "data", download: bool = False, **common) -> DataBundle:
    import torchvision

    train = _open("svhn", torchvision.datasets.SVHN, root, download, split="train")
    test = _open("svhn", torchvision.datasets.SVHN, root, download, split="test")
    if common.get("augment") is True:
        common["augment"] = {"flip": False}   # a mirrored digit is another symbol
    return make_bundle("svhn", _tensor(train.data), _tensor(train.labels), _tensor(test.data),
                       _tensor(test.labels), 10, **common)
