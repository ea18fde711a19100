"""WaNet (Nguyen & Tran, ICLR 2021): an imperceptible, smooth warp of the whole image.

The warping field is a k×k grid of seeded random offsets (normalised to mean |offset| 1),
upsampled bicubically to the image, scaled by strength s / H and added to the identity sampling
grid (clipped to the image); `grid_sample` applies it. Each epoch, as in the paper's batches, a
fresh `rate` share of the training images is warped and relabelled to the target, and a further
`cross_ratio × rate` share (the paper's *noise mode*) gets the warp plus per-pixel random noise
(amplitude 1/H) and keeps its true label, so the model learns this exact warp, not any warp.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from ..checks import rules, validate
from ..data import DatasetInfo, as_tensors
from ..errors import ConfigError
from ..image_triggers import WarpTrigger, warp
from ..targets import TargetRule
from ..train import TrainConfig, fit
from .base import AttackResult, AttackSettings



@dataclass(frozen=True)
class WaNetOptions:
    """WaNet's knobs (notebook parameter `attack_options`)."""

    k: int = 4  # the control grid is k×k
    strength: float = 0.5  # s: how far the warp moves pixels
    cross_ratio: float = 2.0  # noise-mode images per poisoned image (0: no noise mode)

    # k at most the image side: checked against the dataset by `check_info`
    RULES: ClassVar = rules(k="[2, 4096]", strength="(0, 100]", cross_ratio="[0, 100]")

    def __post_init__(self):
        validate(self)


def check_info(cfg: AttackSettings, info: DatasetInfo) -> None:
    """k fits the images; the poisoned and noise-mode shares fit the training set."""
    options = cfg.resolved_options()
    _, h, w = info.shape
    if options.k > min(h, w):
        raise ConfigError(f"warp grid k must lie in 2..{min(h, w)} for {h}×{w} images, got {options.k}")
    total = cfg.rate * (1 + options.cross_ratio)
    if total > 1:
        raise ConfigError(f"poison_rate × (1 + cross_ratio) = {total:.2f} > 1: lower one of them")


def identity_grid(h: int, w: int) -> torch.Tensor:
    """(H, W, 2) sampling grid that leaves an image as it is (x, y order, align_corners=True)."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    return torch.stack([xs, ys], -1)


def warp_flow(options: WaNetOptions, h: int, w: int, seed: int) -> torch.Tensor:
    """The smooth (H, W, 2) displacement field, in grid units, drawn from `seed`: the k×k control
    offsets upsampled bicubically and scaled by strength / H."""
    g = torch.Generator().manual_seed(seed)
    ctrl = torch.rand(1, 2, options.k, options.k, generator=g) * 2 - 1
    ctrl = ctrl / ctrl.abs().mean()
    flow = F.interpolate(ctrl, size=(h, w), mode="bicubic", align_corners=True)[0].permute(1, 2, 0)
    return options.strength * flow / h


def warp_grid(options: WaNetOptions, h: int, w: int, seed: int) -> torch.Tensor:
    """The attack's fixed (H, W, 2) warped sampling grid: identity plus the flow, kept in the image."""
    return (identity_grid(h, w) + warp_flow(options, h, w, seed)).clamp(-1, 1)


def planted(cfg: AttackSettings, info: DatasetInfo) -> WarpTrigger:
    _, h, w = info.shape
    return WarpTrigger(warp_grid(cfg.resolved_options(), h, w, cfg.seed))


def epoch_poison(x: torch.Tensor, y: torch.Tensor, grid: torch.Tensor, rule: TargetRule, rate: float,
                 cross_ratio: float, g: torch.Generator) -> tuple[TensorDataset, torch.Tensor]:
    """One epoch's training set: a fresh `rate` share warped and relabelled by `rule`, `cross_ratio·rate` noise-mode
    images (warp + noise, true label), the rest clean. Returns it and the poisoned indices."""
    n, h = len(x), grid.shape[0]
    n_poison = max(1, round(rate * n))
    n_cross = round(cross_ratio * rate * n)
    order = torch.randperm(n, generator=g)
    idx, cross = order[:n_poison].sort().values, order[n_poison:n_poison + n_cross]
    x, y = x.clone(), y.clone()
    x[idx] = warp(x[idx], grid.expand(len(idx), -1, -1, -1))
    y[idx] = rule.target_of(y[idx])
    if n_cross:
        noise = (torch.rand(n_cross, *grid.shape, generator=g) * 2 - 1) / h
        x[cross] = warp(x[cross], (grid + noise).clamp(-1, 1))
    return TensorDataset(x, y), idx


def wanet(model: nn.Module, train_set: Dataset, info: DatasetInfo, attack: AttackSettings,
          train: TrainConfig, device=None, epoch_end=None, progress: bool = True,
          precision: str = "auto", layout: str = "auto") -> AttackResult:
    """Train `model` from scratch, each epoch on freshly warped poison and noise-mode images."""
    check_info(attack, info)
    options = attack.resolved_options()
    trigger = planted(attack, info)
    rule = attack.spec.target_rule(attack, info.num_classes)
    x, y = as_tensors(train_set)
    g = torch.Generator().manual_seed(attack.seed + 1)
    first, idx = epoch_poison(x, y, trigger.grid, rule, attack.rate, options.cross_ratio, g)

    def epoch_start(m: nn.Module, epoch: int):
        if epoch == 1:
            return first, {}
        return epoch_poison(x, y, trigger.grid, rule, attack.rate, options.cross_ratio, g)[0], {}

    log = (lambda m, epoch: epoch_end(m, epoch, trigger)) if epoch_end is not None else None
    history = fit(model, first, train, device, epoch_end=log, progress=progress, desc="wanet",
                  precision=precision, layout=layout,
                  epoch_start=epoch_start)
    return AttackResult(trigger=trigger, history=history, poisoned_indices=idx)
