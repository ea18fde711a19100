"""The head-shift study of issue #18 (`benchmarks/head_shift.py`): its development victims, its
candidates and its rule of choice, all fixed before any candidate ran.

The question: four studies (weight reset, stage invariance, channel pruning, the path step) did
not keep WaNet's and all-to-all BadNets' backdoors from coming back under re-tuning. Each acted on
what the recovered triggers show, or on weights picked by a clean-data score. Feature-shift tuning
(FST: Min et al., NeurIPS 2023, the same group whose NeurIPS 2024 paper named superficial safety)
acts on neither: it re-initialises the head and, while tuning on clean data, pushes the new head's
weights away from the suspect's (λ·⟨W, W_suspect⟩, ‖W‖ held at the suspect's). The features the
old head read, the backdoor's among them, must then shift. `UnlearnConfig.head_shift = λ` adds
that to the default's unlearning; no trigger is guessed.

The development victims and the rule are the path-step study's; the default is today's. λ = 0.2
is FST's published setting for CIFAR-10 on ResNet-18; 0.1 and 0.4 bracket it. The head's
re-initialisation draws from a random stream of its own, so every candidate's steps see the
default's batches and stamps.
"""

from __future__ import annotations

import dataclasses

from ..defenses import UnlearnConfig
from .path_study import DEV_VICTIMS
from .schedule_study import most_pairs

__all__ = ["CANDIDATES", "DEFAULT", "DEV_VICTIMS", "SHIFT_BEFORE", "choose"]

# the default when the study was fixed (3 cosine epochs, path step ρ = 0.5, penultimate invariance, no reset,
# no channel pruning, no head shift)
SHIFT_BEFORE = {"head_shift": 0.0, "channel_prune": 0.0, "invariance_at": "penultimate", "reset_fraction": 0.0}
DEFAULT = UnlearnConfig(**SHIFT_BEFORE)
CANDIDATES = {"default": DEFAULT,
              **{f"shift_{lam:g}": dataclasses.replace(DEFAULT, head_shift=lam) for lam in (0.1, 0.2, 0.4)}}


def choose(victims: dict[str, dict], candidates: dict[str, UnlearnConfig] = CANDIDATES) -> str:
    """The path-step study's rule: the most (victim, bar) pairs met over the development victims
    that had something to unlearn; the default wins every tie, then the smaller λ."""
    return most_pairs(victims, candidates, DEFAULT, "head_shift")
