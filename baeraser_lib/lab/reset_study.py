"""The weight-reset study of issue #18 (`benchmarks/weight_reset.py`): its development victims,
its candidates and its rule of choice, all fixed before any candidate ran.

The question: after the path-step study, WaNet and all-to-all BadNets still re-learned their
backdoor when re-tuned, on their families rows and on their development victims. Does zeroing,
before unlearning, the weights the clean task barely uses (`UnlearnConfig.reset_fraction = q`,
the q lowest-clean-Fisher entries of each convolution and linear weight) take the backdoor's own
detectors with them, so that re-tuning must re-learn them from nothing, as a clean model must?
The idea is fine-pruning's (a backdoor lives in what clean data leaves dormant), applied to single
weights in every layer, with no guess of the trigger: the Fisher is the clean loss's, on D_h.

The development victims and the rule are the path-step study's; the default is the one it chose.
"""

from __future__ import annotations

import dataclasses

from ..defenses import UnlearnConfig
from .path_study import DEV_VICTIMS
from .schedule_study import most_pairs

__all__ = ["CANDIDATES", "DEFAULT", "DEV_VICTIMS", "RESET_BEFORE", "choose"]

# the default when the study ran and since (3 cosine epochs, path step ρ = 0.5, no reset); the rule picked q = 0.1
# on the development victims, which did worse on the families rows and was not adopted (`confirmed`)
RESET_BEFORE = {"reset_fraction": 0.0, "invariance_at": "penultimate", "channel_prune": 0.0, "head_shift": 0.0}
DEFAULT = UnlearnConfig(**RESET_BEFORE)
CANDIDATES = {"default": DEFAULT,
              **{f"reset_{q:g}": dataclasses.replace(DEFAULT, reset_fraction=q) for q in (0.1, 0.3, 0.5)}}


def choose(victims: dict[str, dict], candidates: dict[str, UnlearnConfig] = CANDIDATES) -> str:
    """The path-step study's rule: the most (victim, bar) pairs met over the development victims
    that had something to unlearn; the default wins every tie, then the smaller q."""
    return most_pairs(victims, candidates, DEFAULT, "reset_fraction")
