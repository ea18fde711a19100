"""The unlearning-schedule study of issue #18 (`benchmarks/unlearning_schedule.py`): its development
victims, its candidates and its rule of choice, all fixed before any candidate ran.

The development victims share the families grid's recipe (Fashion-MNIST, ResNet-18 width 16,
4 epochs, the same D_h) but no families row's trigger, place, target label or attack seed: the
rows where the default is scored take no part in choosing it.
"""

from __future__ import annotations

import dataclasses

from ..config import AttackConfig
from ..defenses import UnlearnConfig
from .claims import COST_SHARE, KEPT_POINTS, LOW_ASR, REACTIVATION_MARGIN

DEV_VICTIMS = {
    "dev_badnets_4x4": AttackConfig(name="badnets", trigger_size=4, trigger_position=(20, 4), target_label=6, seed=1),
    "dev_trojannn_4x4": AttackConfig(name="trojannn", trigger_size=4, trigger_position=(3, 20), target_label=3, seed=1),
    "dev_blended_t5": AttackConfig(name="blended", target_label=5, seed=1),
    # added before any candidate ran, when recovery judged dev_blended_t5 clean (an empty pool: no
    # schedule runs on it, so it tells nothing about one)
    "dev_imc_4x4": AttackConfig(name="imc", trigger_size=4, trigger_position=(8, 2), target_label=1, seed=1),
}
# #18's first schedule, the default before this study (the families grid and the persistence and
# budget benchmarks ran it): 10 epochs at a constant lr
SCHEDULE_BEFORE = {"epochs": 10, "schedule": "constant", "path_rho": 0.0,  # (no path step then: path_study,
                   "reset_fraction": 0.0,  # no weight reset: reset_study)
                   "invariance_at": "penultimate",  # (the penultimate features only: invariance_study)
                   "channel_prune": 0.0,  # (no channel pruning: prune_study)
                   "head_shift": 0.0}  # (no head shift: shift_study)
BASE = UnlearnConfig(**SCHEDULE_BEFORE)
CANDIDATES = {"constant_10": BASE, **{f"cosine_{e}": dataclasses.replace(BASE, schedule="cosine", epochs=e)
                                      for e in (2, 3, 4, 5)}}
BARS = ("asr", "acc_drop_points", "cost_ratio", "stays_erased")


def bars(fig: dict, reference: float) -> dict[str, bool]:
    """Issue #18's four bars on one model's figures; `reference`: the never-backdoored model's re-tuned ASR."""
    return {"asr": fig["asr"] <= LOW_ASR, "acc_drop_points": fig["acc_drop_points"] <= KEPT_POINTS,
            "cost_ratio": fig["cost_ratio"] <= COST_SHARE,
            "stays_erased": fig["reactivated_asr"] <= reference + REACTIVATION_MARGIN}


def choose(victims: dict[str, dict], candidates: dict[str, UnlearnConfig] = CANDIDATES) -> str:
    """The candidate with the fewest epochs that meets every bar on every victim; if none does, the
    one meeting the most (victim, bar) pairs, ties going to fewer epochs. `victims[v]["candidates"]
    [c]["bars"]` holds candidate c's bars on victim v; a victim whose pool was empty (no candidate
    ran) has no say."""
    victims = {k: v for k, v in victims.items() if v["candidates"]}
    if not victims:
        raise ValueError("no development victim had anything to unlearn: there is nothing to choose from")
    met = {c: sum(sum(v["candidates"][c]["bars"].values()) for v in victims.values()) for c in candidates}
    full = len(victims) * len(BARS)
    return min(candidates, key=lambda c: (met[c] < full, -met[c], candidates[c].epochs))


def most_pairs(victims: dict[str, dict], candidates: dict[str, UnlearnConfig], default: UnlearnConfig,
               knob: str) -> str:
    """The later studies' rule: the candidate meeting the most (victim, bar) pairs over the
    development victims that had something to unlearn; `default` wins every tie (a change must
    earn its place), then the smaller value of the studied `knob`."""
    victims = {k: v for k, v in victims.items() if v["candidates"]}
    if not victims:
        raise ValueError("no development victim had anything to unlearn: there is nothing to choose from")
    met = {c: sum(sum(v["candidates"][c]["bars"][b] for b in BARS) for v in victims.values()) for c in candidates}
    return min(candidates, key=lambda c: (-met[c], candidates[c] != default, getattr(candidates[c], knob)))


def confirmed(rows: dict[str, dict], expected, before: str = "default") -> bool:
    """The check after a development choice, before it may become the default: on the families
    rows (`expected`: every one of them), the chosen setting meets at least as many (row, bar)
    pairs as the default it would replace (`rows[r][before]`, `rows[r]["chosen"]`). It can only
    keep a default, never pick one. Written after the weight-reset study's families figures."""
    missing = sorted(set(expected) - set(rows))
    if missing:
        raise ValueError(f"families rows not run yet: {missing}")
    return families_pairs(rows, "chosen", expected) >= families_pairs(rows, before, expected)


def families_pairs(rows: dict[str, dict], key: str, names=None) -> int:
    """How many (row, bar) pairs the figures `rows[r][key]` meet over the rows `names` (all by default)."""
    return sum(sum(bars(rows[r][key], rows[r]["reference_reactivated_asr"]).values()) for r in (names or rows))
