"""Dataset readers on tiny files written here in the real on-disk formats (never the network),
the missing-dataset message, and device-side batching."""
import pickle
import struct

import numpy as np
import pytest
import torch

from odex.data.batches import Batches, RandomCropFlip
from odex.data.bundle import Split
from odex.errors import DatasetNotFound

N_TRAIN, N_TEST = 12, 6


def write_idx(path, array: np.ndarray):
    """IDX: 0x0000, dtype code 0x08 (ubyte), ndim, big-endian dims, raw bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_mnist(root, folder="MNIST"):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_reads_idx_files(tmp_path, name, folder):
    from odex.data import vision

    make_mnist(tmp_path, folder)
    b = getattr(vision, name)(root=str(tmp_path), batch_size=4)
    assert b.info.shape == (1, 28, 28) and b.info.num_classes == 10
    assert len(b.train) == N_TRAIN and len(b.test) == N_TEST
    assert b.train.x.dtype == torch.uint8
    assert b.train.y.tolist() == [i % 10 for i in range(N_TRAIN)]


def test_mnist_t10k_split_and_gz(tmp_path):
    import gzip

    from odex.data.vision import mnist_t10k

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    imgs = np.random.default_rng(1).integers(0, 256, (10, 28, 28))
    write_idx(raw / "imgs", imgs)
    write_idx(raw / "labels", np.arange(10) % 10)
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress((raw / "imgs").read_bytes()))
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress((raw / "labels").read_bytes()))
    b = mnist_t10k(root=str(tmp_path), train_size=7)
    assert len(b.train) == 7 and len(b.test) == 3
    assert b.test.y.tolist() == [7, 8, 9]
    assert torch.equal(b.train.x[0, 0], torch.from_numpy(imgs[0].astype(np.uint8)))


@pytest.fixture
def no_checksums(monkeypatch):
    """CIFAR and SVHN readers verify md5 sums of the real archives: accept our written files."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.svhn as svhn

    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(svhn, "check_integrity", lambda *a, **k: True)


def _pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def test_cifar10_reads_python_batches(tmp_path, no_checksums):
    from odex.data.vision import cifar10

    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    for k in range(1, 6):
        _pickle(d / f"data_batch_{k}", {"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8),
                                        "labels": [k % 10, (k + 1) % 10]})
    test = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    _pickle(d / "test_batch", {"data": test, "labels": [1, 2, 3]})
    _pickle(d / "batches.meta", {"label_names": [str(i) for i in range(10)]})
    b = cifar10(root=str(tmp_path), augment=True)
    assert b.info.shape == (3, 32, 32) and len(b.train) == 10 and len(b.test) == 3
    # CHW layout: channel 0 is the first 1024 bytes of a row
    assert torch.equal(b.test.x[0, 0].flatten(), torch.from_numpy(test[0, :1024]))
    assert b.test.y.tolist() == [1, 2, 3] and b.augment == {}


def test_cifar100_reads_fine_labels(tmp_path, no_checksums):
    from odex.data.vision import cifar100

    d = tmp_path / "cifar-100-python"
    d.mkdir()
    rng = np.random.default_rng(0)
    _pickle(d / "train", {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "fine_labels": [0, 50, 99, 7]})
    _pickle(d / "test", {"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), "fine_labels": [98, 1]})
    _pickle(d / "meta", {"fine_label_names": [str(i) for i in range(100)]})
    b = cifar100(root=str(tmp_path))
    assert b.info.num_classes == 100 and b.train.y.tolist() == [0, 50, 99, 7]


def test_svhn_reads_mat_files(tmp_path, no_checksums):
    from scipy.io import savemat

    from odex.data.vision import svhn

    rng = np.random.default_rng(0)
    for split, n in (("train", 5), ("test", 3)):
        savemat(tmp_path / f"{split}_32x32.mat",
                {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                 "y": np.array([[10], [1], [2], [3], [4]][:n], dtype=np.uint8)})
    b = svhn(root=str(tmp_path), augment=True)
    assert b.info.shape == (3, 32, 32) and len(b.train) == 5
    assert b.train.y.tolist() == [0, 1, 2, 3, 4]       # SVHN stores the digit 0 as 10
    assert b.augment == {"flip": False}                # a mirrored digit is another symbol


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "mnist_t10k"])
def test_missing_dataset_is_one_clear_error(tmp_path, name):
    from odex.data import vision

    with pytest.raises(DatasetNotFound) as e:
        getattr(vision, name)(root=str(tmp_path / "nowhere"))
    msg = str(e.value)
    assert name in msg and str(tmp_path / "nowhere") in msg and "python -m odex.data" in msg


def test_val_split_limits_and_stats():
    from odex.data.digits import digits

    b = digits(val_fraction=0.1, limit_test=50)
    assert len(b.val) == 144 and len(b.train) == 1438 - 144 and len(b.test) == 50
    again = digits(val_fraction=0.1)
    assert torch.equal(b.val.y, again.val.y)          # the same held-out part for every job
    assert 0 < b.info.mean[0] < 1 and b.info.std[0] > 0
    assert float(b.train.x.min()) >= 0 and float(b.train.x.max()) <= 1   # pixel space


def test_batches_cover_the_split_once_per_epoch():
    x = torch.arange(10, dtype=torch.float32).view(10, 1)
    split = Split(x, torch.arange(10))
    g = torch.Generator().manual_seed(0)
    seen = torch.cat([yb for _, yb in Batches(split, 4, shuffle=True, generator=g)])
    assert sorted(seen.tolist()) == list(range(10)) and len(Batches(split, 4)) == 3


def test_random_crop_flip_moves_pixels_within_padding():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 8, 8)
    out = RandomCropFlip(padding=2, flip=True)(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    assert not torch.equal(out, x)
    # an unshifted, unflipped crop exists among 64 random draws and equals its input
    same = [(out[i] == x[i]).all().item() for i in range(64)]
    assert any(same)
    # zero padding: every output pixel is either an input pixel value of that image or 0
    for i in range(4):
        vals = set(x[i].flatten().tolist()) | {0.0}
        assert set(out[i].flatten().tolist()) <= vals
