"""Attacks by name. Each is `fn(model, train_set, info, attack_cfg, train_cfg, device, epoch_end,
progress) -> AttackResult` and trains `model` in place with the shared loop (`train.fit`)."""

from .badnets import badnets

ATTACKS = {"badnets": badnets}

__all__ = ["ATTACKS"]
