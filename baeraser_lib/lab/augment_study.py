"""The augmented-invariance study of issue #18 (`benchmarks/augment_invariance.py`): its
development victims, its candidates and its rule of choice, all fixed before any candidate ran.

The question: five studies did not keep WaNet's and all-to-all BadNets' backdoors from coming back
under re-tuning. The default's invariance term holds a stamped image's penultimate features on its
clean image's, but only for the recovered triggers, and on those rows the recovered triggers do
not look like the true one (a warp; a patch that means another label on every class). Whatever
detects the true trigger is never asked to let go. `UnlearnConfig.augment_invariance = γ_a` also
holds the features under random generic perturbations of the clean images (`perturbations`: a
square of random pixels, a smooth random warp, a faint noise blend; DeepSweep's idea of
augmentation against backdoors), so that any detector of such changes must go. No trigger is
guessed.

The development victims and the rule are the path-step study's; the default is today's. γ_a = 1
is the default invariance term's own scale; 0.5 and 2 bracket it. The perturbations draw from a
random stream of their own, so every candidate's steps see the default's batches and stamps.
"""

from __future__ import annotations

import dataclasses

from ..defenses import UnlearnConfig
from .path_study import DEV_VICTIMS
from .schedule_study import most_pairs

__all__ = ["AUGMENT_BEFORE", "CANDIDATES", "DEFAULT", "DEV_VICTIMS", "choose"]

# the default when the study was fixed (3 cosine epochs, path step ρ = 0.5, penultimate invariance on the
# recovered triggers only, no reset, no channel pruning, no head shift)
AUGMENT_BEFORE = {"augment_invariance": 0.0, "head_shift": 0.0, "channel_prune": 0.0, "invariance_at": "penultimate",
                  "reset_fraction": 0.0}
DEFAULT = UnlearnConfig(**AUGMENT_BEFORE)
CANDIDATES = {"default": DEFAULT,
              **{f"augment_{g:g}": dataclasses.replace(DEFAULT, augment_invariance=g) for g in (0.5, 1.0, 2.0)}}


def choose(victims: dict[str, dict], candidates: dict[str, UnlearnConfig] = CANDIDATES) -> str:
    """The path-step study's rule: the most (victim, bar) pairs met over the development victims
    that had something to unlearn; the default wins every tie, then the smaller γ_a."""
    return most_pairs(victims, candidates, DEFAULT, "augment_invariance")
