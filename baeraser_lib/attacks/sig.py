"""SIG (Barni et al., ICIP 2019): a clean-label backdoor.

A horizontal sinusoid v(i, j) = Δ·sin(2π·j·f / W) is added to a share of the *target class's*
training images, whose labels stay as they are: nothing in the training set is mislabelled. The
model learns to read the signal as evidence for the target; at test time the signal goes on any
image. `poison_rate` is a share of the whole training set, all of it drawn from the target class
(an error when that class has too few images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from ..checks import rules, validate
from ..data import DatasetInfo, as_tensors
from ..errors import ConfigError
from ..image_triggers import AdditiveTrigger
from ..train import TrainConfig, fit
from .base import AttackResult, AttackSettings



@dataclass(frozen=True)
class SIGOptions:
    """SIG's knobs (notebook parameter `attack_options`)."""

    delta: float = 20 / 255  # Δ, the amplitude in pixel units [0, 1]
    frequency: float = 6.0  # f, periods across the image's width
    test_delta: float | None = None  # Δ of the evaluation trigger; None: `delta`

    RULES: ClassVar = rules(delta="(0, 1)", frequency="(0, 10000]", test_delta="(0, 1)")  # Δ in pixel units

    def __post_init__(self):
        validate(self)


def sinusoid(delta: float, frequency: float, shape: tuple[int, int, int]) -> torch.Tensor:
    """The (1, H, W) signal Δ·sin(2π·j·f / W), constant down each column."""
    _, h, w = shape
    j = torch.arange(w, dtype=torch.float32)
    return (delta * torch.sin(2 * math.pi * j * frequency / w)).expand(1, h, w).clone()


def planted(cfg: AttackSettings, info: DatasetInfo) -> AdditiveTrigger:
    """The evaluation trigger (amplitude `test_delta`)."""
    o = cfg.resolved_options()
    return AdditiveTrigger(sinusoid(o.test_delta or o.delta, o.frequency, info.shape))


def n_poison(cfg: AttackSettings, n_train: int) -> int:
    return max(1, round(cfg.rate * n_train))


def check_data(cfg: AttackSettings, train_set: Dataset) -> None:
    """ConfigError unless the target class holds the round(rate × N) images to poison."""
    _, y = as_tensors(train_set)
    have, need = int((y == cfg.target_label).sum()), n_poison(cfg, len(y))
    if need > have:
        raise ConfigError(f"SIG poisons only target-class images: poison_rate {cfg.rate} of {len(y)} images asks "
                          f"for {need}, but class {cfg.target_label} has {have}; use a poison_rate of at most "
                          f"{have / len(y):.4f}")


def poison_target_class(train_set: Dataset, trigger: AdditiveTrigger, cfg: AttackSettings
                        ) -> tuple[TensorDataset, torch.Tensor]:
    """A copy of `train_set` with a seeded round(rate × N) of the target class's images carrying
    the signal; no label changes."""
    check_data(cfg, train_set)
    x, y = as_tensors(train_set)
    members = torch.nonzero(y == cfg.target_label).flatten()
    g = torch.Generator().manual_seed(cfg.seed + 1)
    idx = members[torch.randperm(len(members), generator=g)[:n_poison(cfg, len(y))]].sort().values
    x = x.clone()
    x[idx] = trigger.apply(x[idx])
    return TensorDataset(x, y.clone()), idx


def sig(model: nn.Module, train_set: Dataset, info: DatasetInfo, attack: AttackSettings,
        train: TrainConfig, device=None, epoch_end=None, progress: bool = True,
        precision: str = "auto", layout: str = "auto") -> AttackResult:
    """Add the training-strength signal to target-class images, train from scratch."""
    o = attack.resolved_options()
    poisoned, idx = poison_target_class(train_set, AdditiveTrigger(sinusoid(o.delta, o.frequency, info.shape)),
                                        attack)
    trigger = planted(attack, info)
    log = (lambda m, epoch: epoch_end(m, epoch, trigger)) if epoch_end is not None else None
    history = fit(model, poisoned, train, device, epoch_end=log, progress=progress, desc="sig",
                  precision=precision, layout=layout)
    return AttackResult(trigger=trigger, history=history, poisoned_indices=idx)
