"""The weight-reset study's fixed parts: its victims, candidates and rule of choice."""

from baeraser_lib.defenses import UnlearnConfig
from baeraser_lib.lab import path_study
from baeraser_lib.lab.reset_study import CANDIDATES, DEFAULT, DEV_VICTIMS, choose
from baeraser_lib.lab.schedule_study import BARS


def _victims(met: dict[str, dict[str, int]]) -> dict:
    """{victim: {candidate: how many bars met}} → the shape `choose` reads."""
    return {v: {"candidates": {c: {"bars": {b: i < got.get(c, 0) for i, b in enumerate(BARS)}} for c in CANDIDATES}}
            for v, got in met.items()}


def test_the_candidates_differ_from_the_default_before_in_q_alone():
    assert CANDIDATES["default"] == DEFAULT
    assert DEFAULT.reset_fraction == 0.0 and DEFAULT.path_rho == path_study.CANDIDATES["path_0.5"].path_rho
    for name, cfg in CANDIDATES.items():
        assert UnlearnConfig(**{**cfg.__dict__, "reset_fraction": 0.0}) == DEFAULT
        assert (cfg.reset_fraction > 0) == (name != "default")
    assert DEV_VICTIMS == path_study.DEV_VICTIMS


def test_a_change_must_meet_more_bars_than_the_default():
    met = {"a": {"default": 3, "reset_0.3": 3}, "b": {"default": 2, "reset_0.5": 2}}
    assert choose(_victims(met)) == "default"  # a tie keeps the default
    met["b"]["reset_0.5"] = 3
    met["b"]["reset_0.3"] = 3
    assert choose(_victims(met)) == "reset_0.3"  # one more pair: the smaller q of the two that met it
