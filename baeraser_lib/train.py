"""The one training loop every attack uses, plus device choice and batching.

SGD with momentum and a schedule (one-cycle by default: fast convergence in few epochs), seeded
shuffling, tqdm progress, CPU or GPU picked automatically. Channels-last memory layout is used
internally because it is markedly faster for these convolutions on CPU; the returned model is
in the usual layout.
"""

from __future__ import annotations

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
from .errors import ConfigError
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



def pick_device(preference: str = "auto") -> torch.device:
    """`auto` → CUDA if available, else Apple MPS, else CPU; or the named device."""
    if preference != "auto":
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.25)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def _to_device(model: nn.Module, device: torch.device) -> nn.Module:
    fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    return model.to(device=device, memory_format=fmt)


def fit(
    model: nn.Module,
    train_set: Dataset,
    cfg: TrainConfig,
    device: torch.device | None = None,
    epoch_end: Callable[[nn.Module, int], dict] | None = None,
    progress: bool = True,
    desc: str = "train",
    epoch_start: Callable[[nn.Module, int], tuple[Dataset | None, dict]] | None = None,
) -> list[dict]:
    """Train `model` in place on `train_set`; return one dict of figures per epoch.

    `epoch_end(model, epoch)` may return extra figures (e.g. clean accuracy and ASR) to log.
    `epoch_start(model, epoch)` runs before each epoch (model in eval mode) and returns
    `(dataset or None, figures)`: a dataset of the same size replaces the training data from
    that epoch on (IMC re-stamps its poisoned images with a re-optimised trigger this way).
    """
    x, y = as_tensors(train_set)
    check_images(x, y, dataset_info(cfg.dataset).num_classes, "training data")
    num_outputs(model, x[:1], "training data")  # DataError unless the images fit the model
    device = device or pick_device()
    model = _to_device(model, device)
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
            xb = xb.to(device, non_blocking=True)
            if device.type == "cpu":
                xb = xb.contiguous(memory_format=torch.channels_last)
            yb = yb.to(device, non_blocking=True)
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
            logits = model(xb.to(device))
            bad += int((~torch.isfinite(logits)).any(1).sum())
            out.append(logits.argmax(1).cpu())
    finally:
        model.train(was_training)
    if bad:
        raise FloatingPointError(f"the model outputs NaN or inf on {bad} of {len(x)} images: it cannot be scored "
                                 f"(a model that diverged is not a model without a backdoor)")
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)
