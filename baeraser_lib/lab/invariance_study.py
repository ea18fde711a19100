"""The stage-invariance study of issue #18 (`benchmarks/stage_invariance.py`): its development
victims, its candidates and its rule of choice, all fixed before any candidate ran.

The question: after the path-step and weight-reset studies, WaNet and all-to-all BadNets still
re-learned their backdoor when re-tuned. The default's invariance term pulls a stamped image's
penultimate features onto its clean image's, so the recovered trigger no longer moves the last
features; the layers below may still detect it, one short re-tuning away from the target again.
NAD, the one peer whose models stayed erased on every families row, compares its teacher and
student at the output of every stage. Does comparing stamped and clean features there too
(`UnlearnConfig.invariance_at = "stages"`: the map entering each downsampling layer, and the
penultimate features, the term their mean) take the trigger's features out of the lower layers?
No trigger is guessed: the stamps are the recovered ones, and the stages are found from the
model's own strided convolutions and pools.

The development victims and the rule are the path-step study's; the default is today's.
"""

from __future__ import annotations

import dataclasses

from ..defenses import UnlearnConfig
from .path_study import DEV_VICTIMS
from .schedule_study import most_pairs

__all__ = ["CANDIDATES", "DEFAULT", "DEV_VICTIMS", "INVARIANCE_BEFORE", "choose"]

# the default when the study was fixed (3 cosine epochs, path step ρ = 0.5, no reset, γ = 1 on the penultimate features)
INVARIANCE_BEFORE = {"invariance_at": "penultimate", "invariance": 1.0, "reset_fraction": 0.0, "channel_prune": 0.0,
                     "head_shift": 0.0}
DEFAULT = UnlearnConfig(**INVARIANCE_BEFORE)
# γ weighs the mean over the taps: on ResNet-18 (three stage maps and the penultimate features)
# γ = 4 gives the penultimate term its weight in the default, γ = 1 a quarter of it
CANDIDATES = {"default": DEFAULT,
              **{f"stages_{g:g}": dataclasses.replace(DEFAULT, invariance_at="stages", invariance=g) for g in (1, 2, 4)}}


def choose(victims: dict[str, dict], candidates: dict[str, UnlearnConfig] = CANDIDATES) -> str:
    """The path-step study's rule: the most (victim, bar) pairs met over the development victims
    that had something to unlearn; the default wins every tie, then the smaller γ."""
    return most_pairs(victims, candidates, DEFAULT, "invariance")
