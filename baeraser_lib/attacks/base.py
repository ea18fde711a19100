"""What every attack is and returns.

An attack is a function `fn(model, train_set, info, attack_cfg, train_cfg, device, epoch_end,
progress) -> AttackResult` that trains `model` in place with the shared loop (`train.fit`).
`epoch_end(model, epoch, trigger)` logs per-epoch figures with the trigger of that epoch (IMC
changes it). `AttackSpec` registers it with its typed options and whether it starts from the
clean model (TrojanNN and IMC retrain a trained model, as in their papers) or from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..triggers import Trigger


@dataclass
class AttackResult:
    trigger: Trigger  # the trigger evaluation must use (optimised attacks change it)
    history: list[dict]  # one row of figures per training epoch
    poisoned_indices: torch.Tensor  # indices into the training set that were poisoned
    details: dict = field(default_factory=dict)  # JSON-ready extras for the notebook's figures


@dataclass(frozen=True)
class AttackSpec:
    fn: Callable[..., AttackResult]
    options: type | None = None  # a dataclass of the attack's own options (None: it takes none)
    starts_from_clean: bool = False  # `model` arrives carrying the clean model's weights
    check: Callable[[nn.Module, object], None] | None = None  # validates options against a model
    summary: str = ""
    version: str = ""  # bumped when the algorithm changes, so cached victims of the old one miss
