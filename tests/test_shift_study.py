"""The head-shift study's fixed parts (victims, candidates, rule) and its committed choice."""

from baeraser_lib.defenses import UnlearnConfig
from baeraser_lib.lab import path_study
from baeraser_lib.lab.shift_study import CANDIDATES, DEFAULT, DEV_VICTIMS, choose
from test_reset_study import config_from_repr, victims_meeting


def test_the_candidates_differ_from_today_s_default_in_lambda_alone():
    assert CANDIDATES["default"] == DEFAULT == UnlearnConfig()
    for name, cfg in CANDIDATES.items():
        assert UnlearnConfig(**{**cfg.__dict__, "head_shift": 0.0}) == DEFAULT
        assert (cfg.head_shift > 0) == (name != "default")
    assert CANDIDATES["shift_0.2"].head_shift == 0.2  # FST's published CIFAR-10 setting is among them
    assert DEV_VICTIMS == path_study.DEV_VICTIMS


def test_a_change_must_meet_more_bars_than_the_default():
    met = {"a": {"default": 3, "shift_0.2": 3}, "b": {"default": 2, "shift_0.4": 2}}
    assert choose(victims_meeting(met, CANDIDATES)) == "default"  # a tie keeps the default
    met["b"].update({"shift_0.4": 3, "shift_0.2": 3})
    assert choose(victims_meeting(met, CANDIDATES)) == "shift_0.2"  # one more pair: the smaller λ of the two


def test_the_committed_choice_follows_the_rule():
    import json

    from baeraser_lib.lab.reports import REPO

    doc = json.loads((REPO / "reports" / "benchmarks" / "head_shift.json").read_text())
    assert {k: config_from_repr(v) for k, v in doc["candidates"].items()} == CANDIDATES
    assert set(doc["development"]) == set(DEV_VICTIMS)
    assert doc["chosen"] == choose(doc["development"]) == "default"
