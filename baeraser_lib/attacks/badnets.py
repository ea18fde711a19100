"""BadNets (Gu et al. 2017): stamp a patch on a share of the training images, relabel them to
the target, train on the mix."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from ..config import AttackConfig, TrainConfig
from ..data import DatasetInfo, as_tensors
from ..train import fit
from ..triggers import Trigger, random_pattern
from .base import AttackResult


def make_trigger(cfg: AttackConfig, info: DatasetInfo) -> Trigger:
    """The seeded random-pixel patch of `cfg.trigger_size` at `cfg.trigger_position`."""
    cfg.check_against(info.name)
    return Trigger(random_pattern(cfg.trigger_size, info.channels, cfg.seed), cfg.trigger_position)


def poison(train_set: Dataset, trigger: Trigger, cfg: AttackConfig) -> tuple[TensorDataset, torch.Tensor]:
    """A copy of `train_set` with round(poison_rate × N) seeded images stamped and relabelled."""
    x, y = as_tensors(train_set)
    n_poison = max(1, round(cfg.poison_rate * len(x)))
    g = torch.Generator().manual_seed(cfg.seed + 1)
    idx = torch.randperm(len(x), generator=g)[:n_poison].sort().values
    x, y = x.clone(), y.clone()
    x[idx] = trigger.apply(x[idx], generator=g)
    y[idx] = cfg.target_label
    return TensorDataset(x, y), idx


def badnets(model: nn.Module, train_set: Dataset, info: DatasetInfo, attack: AttackConfig,
            train: TrainConfig, device=None, epoch_end=None, progress: bool = True) -> AttackResult:
    """Plant a BadNets backdoor in `model` (trained in place) and return the trigger and history."""
    trigger = make_trigger(attack, info)
    poisoned, idx = poison(train_set, trigger, attack)
    log = (lambda m, epoch: epoch_end(m, epoch, trigger)) if epoch_end is not None else None
    history = fit(model, poisoned, train, device, epoch_end=log, progress=progress, desc="badnets")
    return AttackResult(trigger=trigger, history=history, poisoned_indices=idx)
