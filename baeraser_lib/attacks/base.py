"""What every attack returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..triggers import Trigger


@dataclass
class AttackResult:
    trigger: Trigger  # the trigger evaluation must use (optimised attacks change it)
    history: list[dict]  # one row of figures per training epoch
    poisoned_indices: torch.Tensor  # indices into the training set that were poisoned
