"""The one training loop every attack uses, plus device choice and batching.

SGD with momentum and a schedule (one-cycle by default: fast convergence in few epochs), seeded
shuffling, tqdm progress, CPU or GPU picked automatically. Channels-last memory layout is used
internally because it is markedly faster for these convolutions on CPU; the returned model is
in the usual layout.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .checks import rules, validate
from .data import as_tensors, check_images, dataset_info, num_outputs
from .errors import ConfigError, DeviceMemoryError
from .models import MODELS

SCHEDULES = ("onecycle", "cosine", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained: data, architecture, optimiser and schedule, seed."""

    dataset: str = "fashion_mnist"
    model: str = "resnet18"
    width: int = 16
    epochs: int = 4
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    train_subset: int | None = None
    seed: int = 0

    RULES: ClassVar = rules(width="[1, 1024]", epochs="[1, 10000]", batch_size="[1, 65536]", lr="(0, 10]",
                            momentum="[0, 1)", weight_decay="[0, 1]", train_subset="[1, 1000000000]", seed="[0, 4294967295]")

    def __post_init__(self):
        validate(self)
        dataset_info(self.dataset)
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of {sorted(MODELS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; choose one of {list(SCHEDULES)}")


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def pick_device(preference: str = "auto") -> torch.device:
    """`auto` → CUDA if available, else Apple MPS, else CPU; or the named device, refused with a
    ConfigError (before any compute) when this machine does not have it."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        dev = torch.device(preference)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device {preference!r}; use auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {preference!r}: this machine has no CUDA GPU that torch {torch.__version__} "
                              f"can use; use 'auto' or 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {preference!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                              f"numbered from 0")
    if dev.type == "mps" and not _mps_available():
        raise ConfigError(f"device {preference!r}: Apple's MPS is not available here; use 'auto' or 'cpu'")
    return dev


PRECISIONS = ("auto", "fp32", "bf16")
LAYOUTS = ("auto", "channels_last", "contiguous")


def _choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ConfigError(f"unknown {what} {value!r}; choose one of {list(allowed)}")
    return value


def check_precision(precision: str) -> str:
    """`precision` itself, or a ConfigError naming the choices (before any compute)."""
    return _choice(precision, PRECISIONS, "precision")


def check_layout(layout: str) -> str:
    """`layout` itself, or a ConfigError naming the choices (before any compute)."""
    return _choice(layout, LAYOUTS, "memory layout")


def uses_bf16(device: torch.device, precision: str = "auto") -> bool:
    """Whether training steps run under bf16 autocast: `auto` → on CUDA only (CPU results stay
    bit-identical to fp32 training), `bf16` → on any device (CPU too, so tests run the CUDA
    path's code), `fp32` → never."""
    check_precision(precision)
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def precision_used(device: torch.device, precision: str = "auto") -> str:
    """What `precision` resolves to on `device`: "bf16" or "fp32" (for the records)."""
    return "bf16" if uses_bf16(device, precision) else "fp32"


def autocast(device: torch.device, precision: str = "auto"):
    """The context a forward pass runs in: bf16 autocast where `uses_bf16`, else nothing. The
    weights, gradients and optimiser state stay fp32 (bf16 has fp32's range: no loss scaling)."""
    if uses_bf16(device, precision):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device, layout: str = "auto") -> torch.memory_format:
    """Channels-last where it is faster for these convolutions: `auto` → on CPU (measured here)
    and CUDA (its tensor-core kernels want NHWC; measured by benchmarks/gpu_check.py), not MPS."""
    check_layout(layout)
    if layout == "auto":
        return torch.channels_last if device.type in ("cpu", "cuda") else torch.contiguous_format
    return torch.channels_last if layout == "channels_last" else torch.contiguous_format


@contextlib.contextmanager
def memory_advice(what: str, batch_size: int, device: torch.device, knob: str = "batch_size"):
    """Turns an out-of-memory error inside the block into a DeviceMemoryError that says which
    batch size to try (half this one)."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise DeviceMemoryError(f"{what}: {device} ran out of memory at batch size {batch_size}; "
                                f"try {knob}={max(1, batch_size // 2)}") from None


def progress_kwargs(progress: bool) -> dict:
    """tqdm kwargs: hidden when `progress` is False or the environment says TQDM_DISABLE (the
    report runner does: bars do not render in HTML). Passed explicitly, because tqdm.auto's
    notebook bars do not read TQDM_DISABLE themselves and would leave empty widget boxes."""
    off = os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")
    return {"disable": True} if off or not progress else {}


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = False,
            generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches of in-memory tensors (a seeded permutation when shuffling)."""
    n = len(x)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        yield x[idx], y[idx]


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps: int):
    if cfg.schedule == "onecycle":
        # OneCycleLR's warm-up ends at step pct_start·steps − 1; at exactly 4 steps that is step 0, and
        # torch divides by the warm-up's zero length: 4 steps warm up over 0.3 instead (only they change)
        pct = 0.3 if steps == 4 else 0.25
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=pct)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def fit(
    model: nn.Module,
    train_set: Dataset,
    cfg: TrainConfig,
    device: torch.device | None = None,
    epoch_end: Callable[[nn.Module, int], dict] | None = None,
    progress: bool = True,
    desc: str = "train",
    epoch_start: Callable[[nn.Module, int], tuple[Dataset | None, dict]] | None = None,
    precision: str = "auto",
    layout: str = "auto",
) -> list[dict]:
    """Train `model` in place on `train_set`; return one dict of figures per epoch.

    `precision` (`autocast`) and `layout` (`memory_format`) are how the steps run, not what
    they compute: their `auto` keeps CPU training bit-identical and uses bf16 + channels-last on
    CUDA. An out-of-memory batch raises a DeviceMemoryError naming the batch size to try.

    `epoch_end(model, epoch)` may return extra figures (e.g. clean accuracy and ASR) to log.
    `epoch_start(model, epoch)` runs before each epoch (model in eval mode) and returns
    `(dataset or None, figures)`: a dataset of the same size replaces the training data from
    that epoch on (IMC re-stamps its poisoned images with a re-optimised trigger this way).
    """
    device = device or pick_device()
    fmt = memory_format(device, layout)
    uses_bf16(device, precision)  # refuses an unknown precision before any compute
    x, y = as_tensors(train_set)
    check_images(x, y, dataset_info(cfg.dataset).num_classes, "training data")
    num_outputs(model, x[:1], "training data")  # DataError unless the images fit the model
    model = model.to(device=device, memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    steps_per_epoch = -(-len(x) // cfg.batch_size)
    sched = _scheduler(opt, cfg, cfg.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    for epoch in range(1, cfg.epochs + 1):
        start, extra = time.perf_counter(), {}
        if epoch_start is not None:
            model.eval()
            new_set, extra = epoch_start(model, epoch)
            if new_set is not None:
                x, y = as_tensors(new_set)
                if -(-len(x) // cfg.batch_size) != steps_per_epoch:
                    raise ValueError(f"{desc}: epoch_start changed the training-set size to {len(x)}")
        model.train()
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(batches(x, y, cfg.batch_size, True, gen), total=steps_per_epoch,
                   desc=f"{desc} {epoch}/{cfg.epochs}", leave=False, **progress_kwargs(progress))
        for xb, yb in bar:
            xb = xb.to(device, non_blocking=True).contiguous(memory_format=fmt)
            yb = yb.to(device, non_blocking=True)
            with memory_advice(desc, cfg.batch_size, device):
                with autocast(device, precision):
                    logits = model(xb)
                    loss = F.cross_entropy(logits, yb)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{desc}: loss became {loss.item()} at epoch {epoch}; lower lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sched.step()
            total_loss += loss.item() * len(yb)
            correct += (logits.argmax(1) == yb).sum().item()
            seen += len(yb)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
        row = {"epoch": epoch, "train_loss": total_loss / seen, "train_acc": correct / seen,
               "seconds": time.perf_counter() - start, **extra}
        if epoch_end is not None:
            t0 = time.perf_counter()
            model.eval()
            row.update(epoch_end(model, epoch))
            row["eval_seconds"] = time.perf_counter() - t0
        history.append(row)
        if progress:
            tqdm.write(f"{desc} epoch {epoch}/{cfg.epochs}: " +
                       ", ".join(f"{k}={v:.4f}" for k, v in row.items() if k not in ("epoch", "eval_seconds")))
    model.to(memory_format=torch.contiguous_format)
    model.eval()
    return history


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512,
            device: torch.device | None = None) -> torch.Tensor:
    """Predicted labels for images `x`, in eval mode, batched (on `device` if given, which moves
    the model there; else where the model is). FloatingPointError if any output is NaN or inf:
    argmax would turn them into class 0, and a diverged model would be scored as if it worked."""
    if device is not None:
        model.to(device)
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out, bad = [], 0
    try:
        for xb, _ in batches(x, x, batch_size):
            with memory_advice("predict", batch_size, device):
                logits = model(xb.to(device))
            bad += int((~torch.isfinite(logits)).any(1).sum())
            out.append(logits.argmax(1).cpu())
    finally:
        model.train(was_training)
    if bad:
        raise FloatingPointError(f"the model outputs NaN or inf on {bad} of {len(x)} images: it cannot be scored "
                                 f"(a model that diverged is not a model without a backdoor)")
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)
