"""The augmented-invariance study's fixed parts (victims, candidates, rule) and its committed choice."""

import json

from baeraser_lib.defenses import UnlearnConfig
from baeraser_lib.lab import path_study
from baeraser_lib.lab.augment_study import CANDIDATES, DEFAULT, DEV_VICTIMS, choose
from baeraser_lib.lab.reports import REPO
from test_reset_study import config_from_repr, victims_meeting


def test_the_candidates_differ_from_today_s_default_in_gamma_a_alone():
    assert CANDIDATES["default"] == DEFAULT == UnlearnConfig()
    for name, cfg in CANDIDATES.items():
        assert UnlearnConfig(**{**cfg.__dict__, "augment_invariance": 0.0}) == DEFAULT
        assert (cfg.augment_invariance > 0) == (name != "default")
    assert DEV_VICTIMS == path_study.DEV_VICTIMS


def test_a_change_must_meet_more_bars_than_the_default():
    met = {"a": {"default": 3, "augment_1": 3}, "b": {"default": 2, "augment_2": 2}}
    assert choose(victims_meeting(met, CANDIDATES)) == "default"
    met["b"].update({"augment_2": 3, "augment_1": 3})
    assert choose(victims_meeting(met, CANDIDATES)) == "augment_1"  # one more pair: the smaller γ_a of the two


def test_the_committed_choice_follows_the_rule_and_keeps_the_default():
    doc = json.loads((REPO / "reports" / "benchmarks" / "augment_invariance.json").read_text())
    assert {k: config_from_repr(v) for k, v in doc["candidates"].items()} == CANDIDATES
    assert set(doc["development"]) == set(DEV_VICTIMS)
    assert doc["chosen"] == choose(doc["development"]) == "default"
