"""Fixtures: tiny datasets written in the real on-disk formats (IDX gz, CIFAR pickles), so every
loader path runs without the internet, and images a small model can learn in seconds."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets as tvd


def learnable_images(n: int, num_classes: int, shape: tuple[int, int, int], seed: int = 0):
    """uint8 images (N, H, W, C) whose class is a bright horizontal band at a class-specific row,
    with noise; the bottom-right corner is left dark so a trigger there is clearly visible."""
    c, h, w = shape
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    imgs = rng.integers(0, 60, (n, h, w, c)).astype(np.uint8)
    band = max(1, (h - 6) // num_classes)
    for i, y in enumerate(labels):
        r = 1 + (int(y) * band) % (h - 6)
        imgs[i, r:r + band, 2:w - 6, :] = 220
    return imgs, labels.astype(np.uint8)


def write_idx(raw_dir: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool = True) -> None:
    """IDX files as MNIST/Fashion-MNIST ship them (big-endian header; gzip optional)."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape[:3]
    img_bytes = struct.pack(">IIII", 0x00000803, n, h, w) + images.reshape(n, h, w).tobytes()
    lbl_bytes = struct.pack(">II", 0x00000801, n) + labels.astype(np.uint8).tobytes()
    for name, blob in ((f"{prefix}-images-idx3-ubyte", img_bytes), (f"{prefix}-labels-idx1-ubyte", lbl_bytes)):
        if gz:
            with gzip.open(raw_dir / f"{name}.gz", "wb") as f:
                f.write(blob)
        else:
            (raw_dir / name).write_bytes(blob)


def write_mnist_family(root: Path, cls_name: str, n_train: int = 400, n_test: int = 200,
                       system_dir: Path | None = None) -> None:
    """Tiny IDX gz files in `<root>/<cls_name>/raw` (or in `system_dir`, like Debian's package)."""
    target = system_dir or root / cls_name / "raw"
    for prefix, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        imgs, labels = learnable_images(n, 10, (1, 28, 28), seed)
        write_idx(target, prefix, imgs[..., 0], labels)


def write_cifar(root: Path, hundred: bool = False, n_per_batch: int = 20) -> None:
    """Tiny CIFAR-10/100 python pickles with the real layout (dicts of a (N, 3072) uint8 array)."""
    cls = tvd.CIFAR100 if hundred else tvd.CIFAR10
    base = root / cls.base_folder
    base.mkdir(parents=True, exist_ok=True)
    k = 100 if hundred else 10
    label_key = "fine_labels" if hundred else "labels"
    for i, (fname, _) in enumerate(cls.train_list + cls.test_list):
        imgs, labels = learnable_images(n_per_batch, k, (3, 32, 32), seed=10 + i)
        data = imgs.transpose(0, 3, 1, 2).reshape(n_per_batch, -1)  # CIFAR stores CHW rows
        with open(base / fname, "wb") as f:
            pickle.dump({"data": data, label_key: labels.astype(int).tolist()}, f)
    with open(base / cls.meta["filename"], "wb") as f:
        pickle.dump({cls.meta["key"]: [f"class{i}" for i in range(k)]}, f)


@pytest.fixture
def no_cifar_md5(monkeypatch):
    """Tiny CIFAR files cannot match the official md5 sums torchvision checks: skip the sums."""
    for cls in (tvd.CIFAR10, tvd.CIFAR100):
        monkeypatch.setattr(cls, "train_list", [[f, None] for f, _ in cls.train_list])
        monkeypatch.setattr(cls, "test_list", [[f, None] for f, _ in cls.test_list])
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": None})


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory) -> Path:
    """A data root holding a tiny Fashion-MNIST in IDX gz (400 train, 200 test images)."""
    root = tmp_path_factory.mktemp("data")
    write_mnist_family(root, "FashionMNIST")
    return root


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
