"""Trigger patches and how they are stamped: the one piece attacks and defenses share.

A patch trigger is an s×s patch (C or 1 channels, values in [0, 1]) that overwrites the image at
a position: a named corner, the centre, explicit (row, col), or `random` (a new place per image).
An optional binary mask sets only some pixels of the box (a sparse trigger). Stamping works on
single images and batches of any size and channel count, and is differentiable in the patch, so
trigger-recovery generators can be trained through it.

Whole-image triggers (blend, warp, additive signal) live in `image_triggers`; `trigger_from_json`
reads any kind back from an artifact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch

from .errors import ConfigError
from .image_triggers import IMAGE_TRIGGERS

NAMED_POSITIONS = ("bottom_right", "bottom_left", "top_right", "top_left", "center", "random")
Position = Union[str, tuple[int, int]]


def parse_position(position) -> Position:
    """Validate a position: a name from NAMED_POSITIONS or a (row, col) pair of ints."""
    if isinstance(position, str):
        if position not in NAMED_POSITIONS:
            raise ConfigError(f"unknown trigger position {position!r}; use one of {list(NAMED_POSITIONS)} "
                              "or a (row, col) pair")
        return position
    if isinstance(position, (list, tuple)) and len(position) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in position):
        if min(position) < 0:
            raise ConfigError(f"trigger position {tuple(position)} has a negative coordinate")
        return (int(position[0]), int(position[1]))
    raise ConfigError(f"trigger position must be a name or a (row, col) pair of ints, got {position!r}")


def check_fits(size: int, position, image_shape: tuple[int, int, int]) -> None:
    """ConfigError unless an s×s patch at `position` lies inside a (C, H, W) image."""
    _, h, w = image_shape
    if not isinstance(size, int) or size < 1:
        raise ConfigError(f"trigger size must be a positive integer, got {size!r}")
    if size > min(h, w):
        raise ConfigError(f"a {size}×{size} trigger is larger than the {h}×{w} image")
    position = parse_position(position)
    if isinstance(position, tuple) and (position[0] + size > h or position[1] + size > w):
        raise ConfigError(f"a {size}×{size} trigger at {position} leaves the {h}×{w} image")


def fixed_offset(position: Position, size: int, height: int, width: int) -> tuple[int, int]:
    """Top-left (row, col) of the patch for a fixed position."""
    if isinstance(position, tuple):
        return position
    return {
        "top_left": (0, 0),
        "top_right": (0, width - size),
        "bottom_left": (height - size, 0),
        "bottom_right": (height - size, width - size),
        "center": ((height - size) // 2, (width - size) // 2),
    }[position]


def random_offsets(n: int, size: int, height: int, width: int, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, 2) top-left offsets drawn uniformly over all places where the patch fits."""
    rows = torch.randint(0, height - size + 1, (n,), generator=generator)
    cols = torch.randint(0, width - size + 1, (n,), generator=generator)
    return torch.stack([rows, cols], 1).to(device)


def stamp(x: torch.Tensor, pattern: torch.Tensor, position="bottom_right",
          generator: torch.Generator | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Return a copy of `x` with `pattern` overwriting it at `position`.

    x: (C, H, W) or (N, C, H, W). pattern: (C|1, s, s), or (N, C|1, s, s) for one patch per image.
    position: a name, (row, col), `random`, or an (N, 2) LongTensor of per-image offsets.
    mask: an optional (1, s, s) boolean box; only its True pixels are overwritten.
    """
    if mask is not None:
        return _stamp_masked(x, pattern, position, generator, mask)
    single = x.ndim == 3
    xb = x.unsqueeze(0) if single else x
    n, c, h, w = xb.shape
    s = pattern.shape[-1]
    if pattern.shape[-2] != s:
        raise ConfigError(f"trigger pattern must be square, got {tuple(pattern.shape[-2:])}")
    if pattern.shape[-3] not in (1, c):
        raise ConfigError(f"trigger pattern has {pattern.shape[-3]} channels; the images have {c}")
    if s > min(h, w):
        raise ConfigError(f"a {s}×{s} trigger is larger than the {h}×{w} image")
    patch = pattern.to(dtype=xb.dtype, device=xb.device).expand(n, c, s, s) if pattern.ndim == 4 \
        else pattern.to(dtype=xb.dtype, device=xb.device).expand(c, s, s)
    out = xb.clone()
    if isinstance(position, torch.Tensor) or position == "random":
        offsets = position if isinstance(position, torch.Tensor) else random_offsets(n, s, h, w, generator)
        offsets = offsets.to(xb.device).long()
        if offsets.shape != (n, 2):
            raise ConfigError(f"per-image offsets must have shape ({n}, 2), got {tuple(offsets.shape)}")
        if (offsets < 0).any() or (offsets[:, 0] + s > h).any() or (offsets[:, 1] + s > w).any():
            raise ConfigError("a per-image trigger offset leaves the image")
        ar = torch.arange(s, device=xb.device)
        rows = (offsets[:, 0:1] + ar)[:, None, :, None]  # (n, 1, s, 1)
        cols = (offsets[:, 1:2] + ar)[:, None, None, :]  # (n, 1, 1, s)
        batch = torch.arange(n, device=xb.device)[:, None, None, None]
        chans = torch.arange(c, device=xb.device)[None, :, None, None]
        out[batch, chans, rows, cols] = patch.expand(n, c, s, s)
    else:
        r, col = fixed_offset(parse_position(position), s, h, w)
        if r + s > h or col + s > w:
            raise ConfigError(f"a {s}×{s} trigger at {(r, col)} leaves the {h}×{w} image")
        out[..., r:r + s, col:col + s] = patch
    return out[0] if single else out


def stamp_mask(x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """(1 − m)⊙x + m⊙p: a full-image soft mask m ∈ [0, 1] (…, 1|C, H, W) blends pattern p into x.

    Patches of any size and place, sparse pixel sets and faint whole-image blends are all special
    cases; shapes broadcast, so one mask can serve a batch and a stack of masks many batches."""
    return x + mask * (pattern - x)


def _stamp_masked(x, pattern, position, generator, mask):
    """`stamp` of the pixels where `mask` is True; the rest of the box keeps the image."""
    if mask.ndim != 3 or mask.shape[0] != 1 or mask.shape[-2:] != pattern.shape[-2:]:
        raise ConfigError(f"a trigger mask must have shape (1, s, s) matching the patch, got {tuple(mask.shape)}")
    xb = x.unsqueeze(0) if x.ndim == 3 else x
    if isinstance(position, str) and position == "random":  # one draw of places for patch and mask
        n, _, h, w = xb.shape
        position = random_offsets(n, pattern.shape[-1], h, w, generator)
    stamped = stamp(xb, pattern, position)
    where = stamp(torch.zeros_like(xb[:, :1], dtype=torch.bool), mask.bool(), position)
    out = torch.where(where, stamped, xb)
    return out[0] if x.ndim == 3 else out


def random_pattern(size: int, channels: int, seed: int) -> torch.Tensor:
    """A (channels, size, size) patch of uniform random pixel values, fixed by `seed`."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(channels, size, size, generator=g)


@dataclass
class Trigger:
    """A patch and where it goes, optionally sparse (`mask`: which pixels of the box it sets).
    `apply` stamps a batch; `to_json`/`from_json` store it exactly."""

    pattern: torch.Tensor
    position: Position = "bottom_right"
    mask: torch.Tensor | None = None  # (1, s, s) bool; None: the whole box

    kind = "patch"

    def __post_init__(self):
        self.position = parse_position(self.position)
        if self.pattern.ndim != 3 or self.pattern.shape[1] != self.pattern.shape[2]:
            raise ConfigError(f"trigger pattern must have shape (C, s, s), got {tuple(self.pattern.shape)}")
        if self.mask is not None:
            self.mask = self.mask.bool()
            if self.mask.shape != (1, *self.pattern.shape[1:]) or not self.mask.any():
                raise ConfigError(f"a trigger mask must be a non-empty (1, {self.size}, {self.size}) box, "
                                  f"got {tuple(self.mask.shape)}")

    @property
    def size(self) -> int:
        return int(self.pattern.shape[-1])

    def set_pixels(self) -> torch.Tensor:
        """(C, s, s) bool: the pixels of the box the trigger sets (all of them unless sparse); the
        only ones a recovered patch can be compared with."""
        full = torch.ones_like(self.pattern, dtype=torch.bool)
        return full if self.mask is None else full & self.mask

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return stamp(x, self.pattern, self.position, generator, self.mask)

    def to_json(self) -> dict:
        d = {"size": self.size, "position": list(self.position) if isinstance(self.position, tuple)
             else self.position, "pattern": self.pattern.detach().cpu().tolist()}
        if self.mask is not None:  # full patches keep the JSON they always had
            d["mask"] = self.mask.int().tolist()
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Trigger":
        pos = d["position"]
        mask = torch.tensor(d["mask"], dtype=torch.bool) if d.get("mask") is not None else None
        return cls(torch.tensor(d["pattern"], dtype=torch.float32), tuple(pos) if isinstance(pos, list) else pos,
                   mask)


def trigger_from_json(d: dict):
    """Any trigger kind from its `to_json` form (patches predate the `kind` key)."""
    kind = d.get("kind", "patch")
    if kind == "patch":
        return Trigger.from_json(d)
    if kind not in IMAGE_TRIGGERS:
        raise ConfigError(f"unknown trigger kind {kind!r}; known: {['patch', *IMAGE_TRIGGERS]}")
    return IMAGE_TRIGGERS[kind].from_json(d)
