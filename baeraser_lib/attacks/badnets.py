"""BadNets (Gu et al. 2017): stamp a patch on a share of the training images, relabel them, train
on the mix.

Options a defender cannot guess: any size and place (`trigger_size`, `trigger_position`, where
`random` draws a new place per image, as the authors' code does), the pattern (`random` pixels,
a black-and-white `checker`, or `solid` white), a sparse mask (`density` < 1: only that share of
the box's pixels is set, a seeded choice), and `mode: all_to_all` (label y goes to (y + 1) mod K).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from ..data import DatasetInfo, as_tensors
from ..checks import rules, validate
from ..errors import ConfigError
from ..targets import MODES, TargetRule
from ..train import TrainConfig, fit
from ..triggers import Trigger, random_pattern
from .base import AttackResult, AttackSettings


PATTERNS = ("random", "checker", "solid")


@dataclass(frozen=True)
class BadNetsOptions:
    """BadNets' own knobs (notebook parameter `attack_options`)."""

    pattern: str = "random"  # random | checker | solid
    density: float = 1.0  # share of the box's pixels the trigger sets; < 1: a sparse trigger
    mode: str = "all_to_one"  # all_to_one | all_to_all

    RULES: ClassVar = rules(density="(0, 1]")  # the share of the box's pixels set

    def __post_init__(self):
        validate(self)
        if self.pattern not in PATTERNS:
            raise ConfigError(f"unknown BadNets pattern {self.pattern!r}; choose one of {list(PATTERNS)}")
        if self.mode not in MODES:
            raise ConfigError(f"unknown attack mode {self.mode!r}; choose one of {list(MODES)}")


def patch_pattern(kind: str, size: int, channels: int, seed: int) -> torch.Tensor:
    """The (channels, size, size) patch: seeded uniform pixels, a 0/1 checkerboard, or all 1."""
    if kind == "random":
        return random_pattern(size, channels, seed)
    if kind == "checker":
        ar = torch.arange(size)
        return ((ar[:, None] + ar[None, :]) % 2 == 0).float().expand(channels, size, size).clone()
    return torch.ones(channels, size, size)


def sparse_mask(size: int, density: float, seed: int) -> torch.Tensor | None:
    """A seeded (1, size, size) mask with round(density · size²) pixels set (at least 1); None at 1."""
    if density >= 1:
        return None
    k = max(1, round(density * size * size))
    g = torch.Generator().manual_seed(seed + 7)
    mask = torch.zeros(size * size, dtype=torch.bool)
    mask[torch.randperm(size * size, generator=g)[:k]] = True
    return mask.view(1, size, size)


def make_trigger(cfg: AttackSettings, info: DatasetInfo, options: BadNetsOptions = BadNetsOptions()) -> Trigger:
    """The seeded patch of `cfg.trigger_size` at `cfg.trigger_position` (pattern and mask from
    `options`; the defaults give the random-pixel full square of the paper)."""
    cfg.check_against(info.name)
    return Trigger(patch_pattern(options.pattern, cfg.trigger_size, info.channels, cfg.seed), cfg.trigger_position,
                   sparse_mask(cfg.trigger_size, options.density, cfg.seed))


def planted(cfg: AttackSettings, info: DatasetInfo) -> Trigger:
    return make_trigger(cfg, info, cfg.resolved_options())


def target_rule(cfg: AttackSettings, num_classes: int) -> TargetRule:
    """All-to-one towards `cfg.target_label`, or all-to-all with `mode: all_to_all`."""
    return TargetRule(cfg.resolved_options().mode, cfg.target_label, num_classes)  # it checks the pair


def poison(train_set: Dataset, trigger, cfg: AttackSettings, rule: TargetRule | None = None
           ) -> tuple[TensorDataset, torch.Tensor]:
    """A copy of `train_set` with round(rate × N) seeded images triggered and relabelled by `rule`
    (default: all to `cfg.target_label`)."""
    rule = rule or TargetRule.all_to_one(cfg.target_label)
    x, y = as_tensors(train_set)
    n_poison = max(1, round(cfg.rate * len(x)))
    g = torch.Generator().manual_seed(cfg.seed + 1)
    idx = torch.randperm(len(x), generator=g)[:n_poison].sort().values
    x, y = x.clone(), y.clone()
    x[idx] = trigger.apply(x[idx], generator=g)
    y[idx] = rule.target_of(y[idx])
    return TensorDataset(x, y), idx


def badnets(model: nn.Module, train_set: Dataset, info: DatasetInfo, attack: AttackSettings,
            train: TrainConfig, device=None, epoch_end=None, progress: bool = True,
            precision: str = "auto", layout: str = "auto") -> AttackResult:
    """Plant a BadNets backdoor in `model` (trained in place) and return the trigger and history."""
    trigger = planted(attack, info)
    poisoned, idx = poison(train_set, trigger, attack, target_rule(attack, info.num_classes))
    log = (lambda m, epoch: epoch_end(m, epoch, trigger)) if epoch_end is not None else None
    history = fit(model, poisoned, train, device, epoch_end=log, progress=progress, desc="badnets",
                  precision=precision, layout=layout)
    return AttackResult(trigger=trigger, history=history, poisoned_indices=idx)
