"""The trigger-channel study of issue #18 (`benchmarks/trigger_channels.py`): its development
victims, its candidates and its rule of choice, all fixed before any candidate ran.

The question: the weight-reset and stage-invariance studies did not keep WaNet's and all-to-all
BadNets' backdoors from coming back under re-tuning. Does zeroing, before unlearning, the filters
of the channels that the recovered triggers move most (`UnlearnConfig.channel_prune = r`: in each
convolution, the fraction r of its output channels with the largest relative change between
stamped and clean images of D_h) remove the backdoor's detectors, so that re-tuning must grow them
again, as in a model that never had them? Neural Cleanse prunes the neurons its reversed trigger
excites, in one layer; here in every convolution, and the filters stay free to regrow. No trigger
is guessed: the stamps are the recovered ones.

The development victims and the rule are the path-step study's; the default is today's. Unlike
the weight reset's, the scoring pass draws from a random stream of its own, so every candidate's
unlearning steps see the batches and stamps the default's see.
"""

from __future__ import annotations

import dataclasses

from ..defenses import UnlearnConfig
from .path_study import DEV_VICTIMS
from .schedule_study import most_pairs

__all__ = ["CANDIDATES", "DEFAULT", "DEV_VICTIMS", "PRUNE_BEFORE", "choose"]

# the default when the study was fixed (3 cosine epochs, path step ρ = 0.5, penultimate invariance, no reset)
PRUNE_BEFORE = {"channel_prune": 0.0, "invariance_at": "penultimate", "reset_fraction": 0.0, "head_shift": 0.0}
DEFAULT = UnlearnConfig(**PRUNE_BEFORE)
CANDIDATES = {"default": DEFAULT,
              **{f"prune_{r:g}": dataclasses.replace(DEFAULT, channel_prune=r) for r in (0.05, 0.1, 0.2)}}


def choose(victims: dict[str, dict], candidates: dict[str, UnlearnConfig] = CANDIDATES) -> str:
    """The path-step study's rule: the most (victim, bar) pairs met over the development victims
    that had something to unlearn; the default wins every tie, then the smaller r."""
    return most_pairs(victims, candidates, DEFAULT, "channel_prune")
