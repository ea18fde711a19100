"""Fine-tuning: train the suspect model on the defender's clean data (the simplest repair)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..checks import rules, validate
from ..train import batches, pick_device, progress_kwargs
from .common import check_finite, defender_figures, split_defense


@dataclass(frozen=True)
class FinetuneConfig:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 10
    batch_size: int = 128
    val_fraction: float = 0.2
    seed: int = 0

    RULES: ClassVar = rules(lr="(0, 10]", momentum="[0, 1)", weight_decay="[0, 1]", epochs="[1, 10000]",
                            batch_size="[1, 65536]", val_fraction="(0, 1)", seed="[0, 4294967295]")

    def __post_init__(self):
        validate(self)


def train_on_clean(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: FinetuneConfig, device,
                   extra_loss=None, after_step=None, desc: str = "fine-tuning", progress: bool = True) -> list[dict]:
    """SGD on (x, y) in place; `extra_loss(model, xb)` adds a term (NAD), `after_step(model)` re-imposes
    a constraint (fine-pruning's mask). Returns the mean loss per epoch."""
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps = -(-len(x) // cfg.batch_size)
    rows = []
    bar = tqdm(total=cfg.epochs * steps, desc=desc, leave=False, **progress_kwargs(progress))
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        total = 0.0
        for xb, yb in batches(x, y, cfg.batch_size, True, gen):
            xb, yb = xb.to(device), yb.to(device)
            loss = F.cross_entropy(model(xb), yb)
            if extra_loss is not None:
                loss = loss + extra_loss(model, xb)
            check_finite(loss, f"{desc} epoch {epoch}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step(model)
            total += loss.item() / steps
            bar.update(1)
        rows.append({"epoch": epoch, "loss": total})
    bar.close()
    return rows


def finetune(model: nn.Module, holding: Dataset, cfg: FinetuneConfig = FinetuneConfig(), device=None,
             progress: bool = True) -> tuple[nn.Module, list[dict]]:
    """A fine-tuned copy of `model` and its history (with defender-side validation accuracy)."""
    device = pick_device() if device is None else torch.device(device)
    xtr, ytr, xv, yv = split_defense(holding, cfg.val_fraction, cfg.seed, model=model)
    student = copy.deepcopy(model).to(device)
    rows = train_on_clean(student, xtr, ytr, cfg, device, progress=progress)
    rows[-1].update(defender_figures(student.eval(), None, xv, yv, cfg.seed, device))
    return student.eval(), rows
