"""Defend your own model: load it, load a little clean data, call one function.

    from baeraser_lib import defend, load_model, load_holding
    model = load_model("suspect.safetensors", "torchvision.resnet18", num_classes=10)
    holding = load_holding("clean_images/")                 # an ImageFolder, an .npz, or a dataset name
    result = defend(model, holding, num_classes=10)         # -> Defended
    result.backdoored, result.flagged, result.model         # the verdict and the repaired model

Every input is checked here, before any compute: the architecture name, the checkpoint against
the architecture (tensor by tensor), the images against the model (size, channels, range), the
labels against [0, K), the holding set's size against what the defense needs. Checkpoints are
untrusted: safetensors, or a PyTorch file read with `weights_only=True`, never unpickled.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from .artifacts import load_state, load_weights, nonfinite_tensors
from .data import DATASETS, as_tensors, check_images, load_experiment_data
from .defenses import DEFENSES, Defended
from .defenses.recovery import check_model_input
from .errors import CheckpointError, ConfigError, DataError, DataNotFoundError
from .models import MODELS, Normalize, build_model
from .train import check_precision as check_precision_name, pick_device

TORCHVISION_PREFIX = "torchvision."


def architectures() -> list[str]:
    """Names `load_model` takes: ours, and torchvision's classification models as `torchvision.<name>`."""
    from torchvision import models as tvm

    return sorted(MODELS) + [TORCHVISION_PREFIX + n for n in tvm.list_models(module=tvm)]


def check_architecture(arch: str | None, model_def: str | None) -> None:
    """ConfigError unless exactly one of `arch` / `model_def` names an architecture that exists."""
    if (arch is None) == (model_def is None):
        raise ConfigError("give an architecture: either --arch NAME or --model-def FILE.py:FACTORY (not both)")
    if model_def is not None:
        _factory(model_def)
        return
    if arch in MODELS:
        return
    if arch.startswith(TORCHVISION_PREFIX):
        from torchvision import models as tvm

        if arch[len(TORCHVISION_PREFIX):] in tvm.list_models(module=tvm):
            return
    raise ConfigError(f"unknown architecture {arch!r}; ours are {sorted(MODELS)}, and torchvision's are named "
                      f"'torchvision.<name>' (e.g. torchvision.resnet18)")


def _factory(model_def: str):
    """The callable that `FILE.py:FACTORY` names. The file is the user's own code and runs as such."""
    path, sep, name = str(model_def).rpartition(":")
    if not sep or not path or not name.isidentifier():
        raise ConfigError(f"--model-def must look like FILE.py:FACTORY, got {model_def!r}")
    if not Path(path).is_file():
        raise ConfigError(f"--model-def file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"baeraser_user_model_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise ConfigError(f"--model-def file {path} failed to import: {type(err).__name__}: {err}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"--model-def: {path} has no callable {name!r}")
    return fn


def _ours(arch: str, state: dict, num_classes: int) -> nn.Module:
    """One of our models at the width and channels its checkpoint has (read from conv1)."""
    w = state.get("conv1.weight")
    if w is None or w.ndim != 4:
        raise CheckpointError(f"the checkpoint has no conv1.weight of 4 dimensions: it is not a {arch} of ours")
    return build_model(arch, num_classes, int(w.shape[1]), int(w.shape[0]))


def build_architecture(arch: str | None, num_classes: int, model_def: str | None = None,
                       state: dict | None = None) -> nn.Module:
    """An untrained model of `arch` (or of the user's factory) with `num_classes` outputs."""
    check_architecture(arch, model_def)
    if model_def is not None:
        try:
            model = _factory(model_def)(num_classes)
        except Exception as err:
            raise ConfigError(f"--model-def {model_def}: calling it with num_classes={num_classes} failed: "
                              f"{type(err).__name__}: {err}") from None
        if not isinstance(model, nn.Module):
            raise ConfigError(f"--model-def {model_def} returned {type(model).__name__}, not a torch nn.Module")
        return model
    if arch in MODELS:
        return _ours(arch, state or {}, num_classes)
    from torchvision import models as tvm

    return tvm.get_model(arch[len(TORCHVISION_PREFIX):], weights=None, num_classes=num_classes)


class Normalized(nn.Module):
    """`model` behind a per-channel normalisation, for models trained on normalised inputs: the
    defense stamps triggers in pixel space [0, 1]. Saving keeps `model`'s own tensor names."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.normalize, self.model = Normalize(mean, std), model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))


def load_model(path: str | os.PathLike, arch: str | None, num_classes: int, model_def: str | None = None,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> nn.Module:
    """A checkpoint (safetensors or weights-only .pt) loaded into `arch` (ours, `torchvision.<name>`)
    or the model that `model_def` ("FILE.py:FACTORY", FACTORY(num_classes) -> nn.Module) builds.
    With `mean`/`std` the model is wrapped to normalise [0, 1] pixels first (`Normalized`)."""
    check_num_classes(num_classes)
    check_architecture(arch, model_def)
    if (mean is None) != (std is None):
        raise ConfigError("give both mean and std (one value per channel), or neither")
    state = load_state(path)
    model = build_architecture(arch, num_classes, model_def, state)
    load_weights(model, path)  # names, shapes and finiteness checked; mismatches listed
    if mean is not None:
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ConfigError(f"mean and std need one value per channel and std > 0, got {mean} / {std}")
        model = Normalized(model, mean, std)
    return model.eval()


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors to save for `model`: a `Normalized` wrapper saves its inner model's, under the
    names the input checkpoint had."""
    inner = model.model if isinstance(model, Normalized) else model
    return {k: v.detach().cpu().contiguous() for k, v in inner.state_dict().items()}


def check_num_classes(num_classes) -> None:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ConfigError(f"num_classes must be an integer ≥ 2, got {num_classes!r}")


# -- holding data ------------------------------------------------------------------------------

def _to_nchw(x: np.ndarray, where: str) -> torch.Tensor:
    """uint8 (0..255) or float ([0, 1]) images, (N, H, W), (N, H, W, C) or (N, C, H, W) → float NCHW in [0, 1]."""
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ConfigError(f"{where}: images must have 3 or 4 dimensions (N, H, W[, C]) or (N, C, H, W), got {x.shape}")
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)
    if not np.issubdtype(x.dtype, np.floating):
        raise ConfigError(f"{where}: images must be uint8 (0..255) or float ([0, 1]), got {x.dtype}")
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1:
        raise ConfigError(f"{where}: float images must lie in [0, 1] (got {t.min().item():.3g}..{t.max().item():.3g}); "
                          f"save uint8 pixels or divide by 255")
    return t


def _npz(path: Path) -> TensorDataset:
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            xk = next((k for k in ("x", "images", "X") if k in keys), None)
            yk = next((k for k in ("y", "labels", "Y") if k in keys), None)
            if xk is None or yk is None:
                raise ConfigError(f"{path}: an .npz of holding data needs arrays 'x' (or 'images') and 'y' "
                                  f"(or 'labels'); it has {sorted(keys)}")
            x, y = f[xk], f[yk]
    except (ValueError, OSError) as err:
        raise ConfigError(f"{path}: not a readable .npz without pickled objects ({err})") from None
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) != len(x):
        raise ConfigError(f"{path}: labels must be one integer per image ({len(x)} images, labels {y.shape} {y.dtype})")
    return TensorDataset(_to_nchw(x, str(path)), torch.from_numpy(y.astype(np.int64)))


def _image_folder(path: Path) -> TensorDataset:
    """torchvision's ImageFolder: one sub-folder per class. Folders named by integers are those
    labels (0, 1, …, 10, …); otherwise ImageFolder's rule, the sorted folder names, gives 0..K-1."""
    from PIL import Image
    from torchvision.datasets import ImageFolder
    from torchvision.transforms.functional import pil_to_tensor

    try:
        ds = ImageFolder(str(path))
    except (FileNotFoundError, RuntimeError) as err:
        raise ConfigError(f"{path}: not an image folder with one sub-folder of images per class ({err})") from None
    numeric = all(re.fullmatch(r"\d+", c) for c in ds.classes)
    label_of = {i: (int(c) if numeric else i) for i, c in enumerate(ds.classes)}
    xs, ys, sizes = [], [], set()
    for file, idx in ds.samples:
        with Image.open(file) as img:  # not ImageFolder's loader: it makes every image RGB
            t = pil_to_tensor(img.convert("L" if img.mode in ("L", "1", "I;16", "I") else "RGB"))
        sizes.add(tuple(t.shape))
        xs.append(t), ys.append(label_of[idx])
    if len(sizes) > 1:
        raise ConfigError(f"{path}: the images differ in size or channels ({sorted(sizes)[:3]} …); resize them to one")
    return TensorDataset(torch.stack(xs).float().div_(255.0), torch.tensor(ys, dtype=torch.long))


def load_holding(source: str | os.PathLike, data_root: str | os.PathLike = "data", holding_ratio: float = 0.05,
                 seed: int = 0) -> Dataset:
    """The defender's clean data D_h from an image folder, an .npz (x uint8/float, y int), or a
    dataset name of ours (its seeded D_h: `holding_ratio` × the training-set size, from the test split)."""
    s = str(source)
    if s in DATASETS:
        return load_experiment_data(s, data_root, holding_ratio=holding_ratio, seed=seed).holding
    path = Path(s)
    if path.is_dir():
        return _image_folder(path)
    if path.is_file() and path.suffix == ".npz":
        return _npz(path)
    if not path.exists():
        raise DataNotFoundError(f"holding data {s!r} is neither a folder, an .npz file nor a dataset name "
                                f"({sorted(DATASETS)})")
    raise ConfigError(f"holding data {s}: give an image folder (one sub-folder per class) or an .npz")


def evaluation_split(name: str, data_root: str | os.PathLike = "data", holding_ratio: float = 0.05,
                     seed: int = 0) -> Dataset:
    """A named dataset's test images outside its D_h (the notebooks' evaluation split)."""
    return load_experiment_data(name, data_root, holding_ratio=holding_ratio, seed=seed).evaluation


def check_data(model: nn.Module, data: Dataset, num_classes: int, what: str = "holding data",
               min_images: int = 1) -> None:
    """ConfigError unless `data` holds float images in [0, 1] that `model` takes, labels in
    [0, num_classes) and at least `min_images` images. Runs two images through the model."""
    if not isinstance(data, Dataset):
        raise ConfigError(f"{what} must be a torch Dataset of (image, label), got {type(data).__name__}")
    if len(data) < min_images:
        raise ConfigError(f"{what} holds {len(data)} images; the defense needs at least {min_images}")
    try:
        x, y = as_tensors(data)
    except (TypeError, ValueError, RuntimeError, IndexError) as err:
        raise DataError(f"{what}: items must be (image tensor, integer label) pairs of one shape ({err})") from None
    check_images(x, y, num_classes, what)
    first = next(model.parameters(), None)
    try:  # recovery's own probe: channels, a forward pass, the number of outputs, finite logits
        check_model_input(model, x[:2], num_classes, first.device if first is not None else "cpu")
    except ConfigError as err:
        raise ConfigError(f"{what}: images of shape {tuple(x.shape[1:])} (C, H, W) do not fit the model: {err}") \
            from None


def resolve_device(device=None) -> torch.device:
    """`None` or "auto" → the best device here; a name ("cpu", "cuda:1"), a torch.device or a
    CUDA index → that device, refused with a ConfigError when this machine lacks it."""
    if device is None or isinstance(device, str):
        return pick_device(device or "auto")
    try:
        name = str(torch.device(device))
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    return pick_device(name)


def check_precision(method: str, precision: str) -> None:
    """A ConfigError for an unknown precision, or for `bf16` with a method that has no bf16 path."""
    if method not in DEFENSES:
        raise ConfigError(f"unknown defense {method!r}; choose one of {sorted(DEFENSES)}")
    check_precision_name(precision)
    if precision == "bf16" and not DEFENSES[method].bf16:
        raise ConfigError(f"{method} runs in fp32 only; precision 'bf16' applies to "
                          f"{[k for k, s in DEFENSES.items() if s.bf16]}")


def defend(model: nn.Module, holding: Dataset, num_classes: int, method: str = "baeraser", config=None,
           device=None, progress: bool = True, precision: str = "auto", **given) -> Defended:
    """Run the registered defense `method` on `model` with the clean holding set `holding`.

    `config` is the method's config (default: its defaults, `DEFENSES[method].config()`); `given`
    passes what another defense already computed from the same inputs (see `defenses.base`).
    `device` is `resolve_device`'s. `precision` (auto | fp32 | bf16) is for methods with a bf16
    path (BAERASER's unlearning): `auto` runs bf16 autocast steps on CUDA and fp32 elsewhere,
    `fp32` switches it off; the other methods run fp32 and refuse `bf16`. Every input is checked
    before any compute; `model` itself is never changed."""
    check_precision(method, precision)  # an unknown method, too
    spec = DEFENSES[method]
    device = resolve_device(device)
    if spec.bf16:
        given["precision"] = precision
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch nn.Module, got {type(model).__name__}")
    check_num_classes(num_classes)
    config = spec.config() if config is None else config
    if not isinstance(config, spec.config):
        raise ConfigError(f"{method} takes a {spec.config.__name__}, got {type(config).__name__}")
    bad = nonfinite_tensors(model.state_dict())
    if bad:
        raise ConfigError(f"the model holds NaN or inf in {len(bad)} tensors (e.g. {bad[:3]}): nothing to defend")
    check_data(model, holding, num_classes, min_images=spec.min_holding)
    return spec.run(model, holding, num_classes, config, device=device, progress=progress, **given)
