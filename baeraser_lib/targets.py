"""Which label a triggered image should get, and which images an ASR counts.

Each attack states its rule (`AttackSpec.target_rule`); metrics and poisoning apply it and keep no
copy of it. All-to-one (BadNets, TrojanNN, IMC, blended, WaNet and the clean-label SIG): every
triggered image should go to one target; the ASR counts images whose true label is not the
target. All-to-all: label y should go to (y + 1) mod K; the ASR counts every image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import ConfigError

MODES = ("all_to_one", "all_to_all")


@dataclass(frozen=True)
class TargetRule:
    mode: str = "all_to_one"
    target: int | None = 0  # all-to-one only
    num_classes: int | None = None  # needed by all-to-all

    def __post_init__(self):
        """The one place the mode, the target label and the classes are checked against each other."""
        if self.mode not in MODES:
            raise ConfigError(f"unknown attack mode {self.mode!r}; choose one of {list(MODES)}")
        if self.mode == "all_to_one":
            if not isinstance(self.target, int) or isinstance(self.target, bool) or self.target < 0:
                raise ConfigError(f"target_label must be a non-negative integer, got {self.target!r}"
                                  + (" (only mode all_to_all takes None)" if self.target is None else ""))
        elif self.target is not None:
            raise ConfigError(f"mode all_to_all sends label y to (y + 1) mod K, so it takes no target label; "
                              f"got target_label={self.target!r}: set target_label to None")
        if self.num_classes is not None:
            if not isinstance(self.num_classes, int) or self.num_classes < 2:
                raise ConfigError(f"an attack needs at least 2 classes, got {self.num_classes!r}")
            if self.target is not None and self.target >= self.num_classes:
                raise ConfigError(f"target_label {self.target} is not a class of the data "
                                  f"(0..{self.num_classes - 1})")

    @classmethod
    def all_to_one(cls, target: int, num_classes: int | None = None) -> "TargetRule":
        return cls("all_to_one", target, num_classes)

    @classmethod
    def all_to_all(cls, num_classes: int | None) -> "TargetRule":
        return cls("all_to_all", None, num_classes)

    def counted(self, y: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the images an ASR counts."""
        return y != self.target if self.mode == "all_to_one" else torch.ones_like(y, dtype=torch.bool)

    def target_of(self, y: torch.Tensor) -> torch.Tensor:
        """The label each image should get once triggered."""
        if self.mode == "all_to_one":
            return torch.full_like(y, self.target)
        if self.num_classes is None:
            raise ConfigError("an all-to-all rule needs the number of classes to map y to (y + 1) mod K")
        return (y + 1) % self.num_classes

    def describe(self) -> str:
        return f"all-to-one → {self.target}" if self.mode == "all_to_one" else "all-to-all: y → (y + 1) mod K"


def as_rule(target) -> TargetRule:
    """A TargetRule from a rule or a plain target label (all-to-one)."""
    if isinstance(target, TargetRule):
        return target
    return TargetRule.all_to_one(target)
