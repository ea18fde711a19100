"""What every attack is and returns.

An attack is a function `fn(model, train_set, info, attack_cfg, train_cfg, device, epoch_end,
progress) -> AttackResult` that trains `model` in place with the shared loop (`train.fit`).
`epoch_end(model, epoch, trigger)` logs per-epoch figures with the trigger of that epoch (IMC
changes it). `AttackSpec` registers it with its typed options, how its trigger is planted, the
rule its ASR is measured by, and whether it starts from the clean model (TrojanNN and IMC retrain
a trained model, as in their papers) or from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from torch import nn

from ..targets import TargetRule


class AttackSettings(Protocol):
    """What an attack reads of its config (`config.AttackConfig` is the one implementation; the
    configs sit above the attacks, since they validate names against `ATTACKS`)."""

    name: str
    trigger_size: int
    trigger_position: object
    poison_rate: float | None
    target_label: int | None
    seed: int
    options: dict

    @property
    def rate(self) -> float: ...

    def resolved_options(self): ...


@dataclass
class AttackResult:
    trigger: object  # the trigger evaluation must use (optimised attacks change it); has `apply`
    history: list[dict]  # one row of figures per training epoch
    poisoned_indices: torch.Tensor  # indices into the training set that were poisoned (first epoch's)
    details: dict = field(default_factory=dict)  # JSON-ready extras for the notebook's figures


def all_to_one(cfg, num_classes: int) -> TargetRule:
    """The usual rule: every triggered image should go to `cfg.target_label`."""
    return TargetRule.all_to_one(cfg.target_label, num_classes)


@dataclass(frozen=True)
class AttackSpec:
    fn: Callable[..., AttackResult]
    planted: Callable  # planted(cfg, info) -> the trigger before training (TrojanNN/IMC: the start)
    options: type | None = None  # a dataclass of the attack's own options (None: it takes none)
    starts_from_clean: bool = False  # `model` arrives carrying the clean model's weights
    check: Callable[[nn.Module, object], None] | None = None  # validates options against a model
    check_info: Callable | None = None  # check_info(cfg, info): the config against the dataset
    check_data: Callable | None = None  # check_data(cfg, train_set): the config against the training set
    rule: Callable[[object, int], TargetRule] = all_to_one  # rule(cfg, num_classes): what the ASR counts
    patch: bool = True  # the trigger is a patch of `trigger_size` at `trigger_position`
    optimised_trigger: bool = False  # training changes the trigger (the victim's differs from `planted`)
    default_poison_rate: float = 0.05  # used when the config's poison_rate is None
    asr_target: float = 0.90  # the ASR the project's issues hold it to at the default setting
    summary: str = ""
    version: str = ""  # bumped when the algorithm changes, so cached victims of the old one miss

    def target_rule(self, cfg, num_classes: int) -> TargetRule:
        return self.rule(cfg, num_classes)
