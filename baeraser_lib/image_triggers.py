"""Whole-image triggers: a blend, a warp, an additive signal.

Each holds the tensors that define it (drawn by its attack from a seed) and applies them to a
batch of images in [0, 1]; `to_json`/`from_json` store it exactly in a victim's artifact, so
evaluation uses the very trigger the attacker planted. The attacks that build them live in
`attacks/`; this module only says what each trigger does to an image.

    blend     x' = (1 − a)·x + a·p              (Chen et al. 2017)
    warp      x' = x sampled at a fixed, smoothly displaced grid   (WaNet, Nguyen & Tran 2021)
    additive  x' = clip(x + v, 0, 1)            (SIG's sinusoid, Barni et al. 2019)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import ConfigError


def _tensor(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def _check_image(x: torch.Tensor, shape: tuple[int, ...], what: str) -> torch.Tensor:
    """`x` as a batch; ConfigError unless its images match the trigger's (C|1, H, W)."""
    xb = x.unsqueeze(0) if x.ndim == 3 else x
    c, h, w = xb.shape[1:]
    if tuple(shape[-2:]) != (h, w) or shape[0] not in (1, c):
        raise ConfigError(f"a {what} trigger of shape {tuple(shape)} does not fit images of shape {(c, h, w)}")
    return xb


@dataclass
class BlendTrigger:
    """x' = (1 − alpha)·x + alpha·pattern over the whole image; pattern is (C|1, H, W)."""

    pattern: torch.Tensor
    alpha: float

    kind = "blend"

    def __post_init__(self):
        if self.pattern.ndim != 3:
            raise ConfigError(f"a blend pattern must have shape (C, H, W), got {tuple(self.pattern.shape)}")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"a blend ratio must lie in (0, 1), got {self.alpha!r}")

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        xb = _check_image(x, self.pattern.shape, "blend")
        out = (1 - self.alpha) * xb + self.alpha * self.pattern.to(xb.device, xb.dtype)
        return out[0] if x.ndim == 3 else out

    def to_json(self) -> dict:
        return {"kind": self.kind, "alpha": self.alpha, "pattern": self.pattern.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> "BlendTrigger":
        return cls(_tensor(d["pattern"]), float(d["alpha"]))


@dataclass
class WarpTrigger:
    """Resample the image at `grid` (H, W, 2), grid_sample's coordinates in [−1, 1]: a fixed warp."""

    grid: torch.Tensor

    kind = "warp"

    def __post_init__(self):
        if self.grid.ndim != 3 or self.grid.shape[-1] != 2:
            raise ConfigError(f"a warp grid must have shape (H, W, 2), got {tuple(self.grid.shape)}")
        if self.grid.abs().max() > 1:
            raise ConfigError("a warp grid must stay within the image ([-1, 1])")

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        xb = _check_image(x, (1, *self.grid.shape[:2]), "warp")
        out = warp(xb, self.grid.to(xb.device, xb.dtype).expand(len(xb), -1, -1, -1))
        return out[0] if x.ndim == 3 else out

    def to_json(self) -> dict:
        return {"kind": self.kind, "grid": self.grid.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> "WarpTrigger":
        return cls(_tensor(d["grid"]))


def warp(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W) resampled (bilinear) at per-image grids (N, H, W, 2), kept in [0, 1]."""
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True).clamp(0, 1)


@dataclass
class AdditiveTrigger:
    """x' = clip(x + signal, 0, 1); signal is (C|1, H, W)."""

    signal: torch.Tensor

    kind = "additive"

    def __post_init__(self):
        if self.signal.ndim != 3:
            raise ConfigError(f"an additive signal must have shape (C, H, W), got {tuple(self.signal.shape)}")

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        xb = _check_image(x, self.signal.shape, "additive")
        out = (xb + self.signal.to(xb.device, xb.dtype)).clamp(0, 1)
        return out[0] if x.ndim == 3 else out

    def to_json(self) -> dict:
        return {"kind": self.kind, "signal": self.signal.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> "AdditiveTrigger":
        return cls(_tensor(d["signal"]))


IMAGE_TRIGGERS = {t.kind: t for t in (BlendTrigger, WarpTrigger, AdditiveTrigger)}
