"""Blended (Chen et al. 2017): a whole-image pattern mixed into the poisoned images,
x' = (1 − a)·x + a·p, which are relabelled to the target.

p is seeded uniform noise by default, or the user's own: a path to an image file (converted to
the dataset's channels and resized to its images; a relative path is read from the working
directory, which is `notebooks/` for the notebooks; the victim's name covers the file's
contents) or an array of shape (C, H, W) or (H, W).
Poisoning blends with `alpha`; the victim's trigger (the one evaluation uses) with `test_alpha`,
the same by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

import hashlib

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..checks import rules, validate
from ..data import DatasetInfo
from ..errors import ConfigError
from ..image_triggers import BlendTrigger
from ..train import TrainConfig, fit
from .badnets import poison
from .base import AttackResult, AttackSettings



@dataclass(frozen=True)
class BlendedOptions:
    """Blended's knobs (notebook parameter `attack_options`)."""

    alpha: float = 0.15  # blend ratio of poisoning
    test_alpha: float | None = None  # blend ratio of the evaluation trigger; None: `alpha`
    pattern: str | list = "noise"  # "noise" (seeded uniform), an image file's path, or an array

    RULES: ClassVar = rules(alpha="(0, 1)", test_alpha="(0, 1)")  # blend ratios

    def __post_init__(self):
        if isinstance(self.pattern, (np.ndarray, torch.Tensor)):
            object.__setattr__(self, "pattern", np.asarray(self.pattern, dtype=float).tolist())  # hashable as JSON
        validate(self)
        pattern = self.pattern
        if not isinstance(pattern, (str, list)):
            raise ConfigError(f"blend pattern must be 'noise', an image file's path or an array, got {pattern!r}")
        if isinstance(pattern, list):
            try:
                values = np.asarray(pattern, dtype=float)
            except (TypeError, ValueError):
                raise ConfigError("a blend pattern array must be a regular grid of numbers") from None
            if not np.isfinite(values).all() or values.min(initial=0) < 0 or values.max(initial=0) > 1:
                raise ConfigError("a blend pattern array must hold finite pixel values in [0, 1]")
        if isinstance(pattern, str) and pattern != "noise" and not Path(pattern).is_file():
            raise ConfigError(f"blend pattern {pattern!r} is neither 'noise' nor an image file that exists "
                              f"(relative paths are read from {Path.cwd()})")

    def fingerprint(self) -> dict:
        """What names the victim: the options, and an image file by its contents, not its path."""
        d = {"alpha": self.alpha, "test_alpha": self.test_alpha, "pattern": self.pattern}
        if isinstance(self.pattern, str) and self.pattern != "noise":
            d["pattern"] = "file sha256 " + hashlib.sha256(Path(self.pattern).read_bytes()).hexdigest()
        return d


def _array_pattern(values, shape: tuple[int, int, int]) -> torch.Tensor:
    try:
        p = torch.as_tensor(np.asarray(values, dtype=np.float32))
    except (ValueError, TypeError):
        raise ConfigError("blend pattern array must be a rectangular array of numbers") from None
    c, h, w = shape
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or tuple(p.shape[1:]) != (h, w) or p.shape[0] not in (1, c):
        raise ConfigError(f"blend pattern of shape {tuple(np.shape(values))} does not fit the dataset's "
                          f"images: give ({c}, {h}, {w}), (1, {h}, {w}) or ({h}, {w})")
    if p.min() < 0 or p.max() > 1:
        raise ConfigError("blend pattern values must lie in [0, 1]")
    return p.expand(c, h, w).clone()


def _image_pattern(path: str, shape: tuple[int, int, int]) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    c, h, w = shape
    try:
        img = Image.open(path).convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
    except (OSError, UnidentifiedImageError) as err:
        raise ConfigError(f"blend pattern {path!r} is not a readable image ({err})") from None
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
    return arr[None] if c == 1 else arr.permute(2, 0, 1).contiguous()


def blend_pattern(options: BlendedOptions, info: DatasetInfo, seed: int) -> torch.Tensor:
    """The (C, H, W) pattern p in [0, 1]."""
    if isinstance(options.pattern, list):
        return _array_pattern(options.pattern, info.shape)
    if options.pattern == "noise":
        return torch.rand(*info.shape, generator=torch.Generator().manual_seed(seed))
    return _image_pattern(options.pattern, info.shape)


def check_info(cfg: AttackSettings, info: DatasetInfo) -> None:
    """The user's pattern (array or image file) is read and must fit the dataset's images."""
    if cfg.resolved_options().pattern != "noise":
        blend_pattern(cfg.resolved_options(), info, cfg.seed)


def planted(cfg: AttackSettings, info: DatasetInfo) -> BlendTrigger:
    """The evaluation trigger (blend ratio `test_alpha`, else `alpha`)."""
    options = cfg.resolved_options()
    return BlendTrigger(blend_pattern(options, info, cfg.seed), options.test_alpha or options.alpha)


def blended(model: nn.Module, train_set: Dataset, info: DatasetInfo, attack: AttackSettings,
            train: TrainConfig, device=None, epoch_end=None, progress: bool = True,
            precision: str = "auto", layout: str = "auto") -> AttackResult:
    """Poison with the pattern blended at `alpha`, train from scratch; evaluate at `test_alpha`."""
    trigger = planted(attack, info)
    at_training = BlendTrigger(trigger.pattern, attack.resolved_options().alpha)
    poisoned, idx = poison(train_set, at_training, attack, attack.spec.target_rule(attack, info.num_classes))
    log = (lambda m, epoch: epoch_end(m, epoch, trigger)) if epoch_end is not None else None
    history = fit(model, poisoned, train, device, epoch_end=log, progress=progress, desc="blended",
                  precision=precision, layout=layout)
    return AttackResult(trigger=trigger, history=history, poisoned_indices=idx)
