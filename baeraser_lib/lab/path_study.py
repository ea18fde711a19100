"""The path-step study of issue #18 (`benchmarks/path_step.py`): its development victims, its
candidates and its rule of choice, all fixed before any candidate ran.

The question: does asking the unlearning loss to be low a step further along the path from the
suspect θ0 through the current θ (`UnlearnConfig.path_rho`, the idea of Min et al.'s PAM) keep
backdoors erased under re-tuning where the default does not, without losing its other bars?

The development victims are the schedule study's, plus a WaNet and an all-to-all BadNets victim,
the two kinds whose families rows re-learned their backdoor after the default repaired them. Like
the others they share the families recipe but no families row's trigger, place, target label or
attack seed.
"""

from __future__ import annotations

import dataclasses

from ..config import AttackConfig
from ..defenses import UnlearnConfig
from .schedule_study import DEV_VICTIMS as SCHEDULE_VICTIMS, most_pairs

DEV_VICTIMS = {
    **SCHEDULE_VICTIMS,
    "dev_wanet_t3": AttackConfig(name="wanet", target_label=3, seed=1),
    "dev_all_to_all_4x4": AttackConfig(name="badnets", trigger_size=4, trigger_position=(3, 3), target_label=None,
                                       seed=1, options={"mode": "all_to_all"}),
}
# the default when the study ran (3 cosine epochs, no path step, no weight reset: reset_study); the study
# chose ρ = 0.5, the default since
PATH_BEFORE = {"path_rho": 0.0, "reset_fraction": 0.0, "invariance_at": "penultimate", "channel_prune": 0.0,
               "head_shift": 0.0}
DEFAULT = UnlearnConfig(**PATH_BEFORE)
CANDIDATES = {"default": DEFAULT, **{f"path_{r:g}": dataclasses.replace(DEFAULT, path_rho=r) for r in (0.5, 1.0, 2.0)}}


def choose(victims: dict[str, dict], candidates: dict[str, UnlearnConfig] = CANDIDATES) -> str:
    """The candidate meeting the most (victim, bar) pairs over the development victims that had
    something to unlearn; the default wins every tie (a change must earn its place), then the
    smaller ρ. `victims[v]["candidates"][c]["bars"]` holds candidate c's bars on victim v."""
    return most_pairs(victims, candidates, DEFAULT, "path_rho")
