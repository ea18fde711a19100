"""The path-step study's fixed parts: its victims, candidates and rule of choice."""

import yaml

from baeraser_lib.defenses import UnlearnConfig
from baeraser_lib.lab.path_study import CANDIDATES, DEFAULT, DEV_VICTIMS, choose
from baeraser_lib.lab.reports import REPO
from baeraser_lib.lab.schedule_study import BARS


def _victims(met: dict[str, dict[str, int]]) -> dict:
    """{victim: {candidate: how many bars met}} → the shape `choose` reads."""
    return {v: {"candidates": {c: {"bars": {b: i < got.get(c, 0) for i, b in enumerate(BARS)}} for c in CANDIDATES}}
            for v, got in met.items()}


def test_the_candidates_differ_from_the_default_before_in_rho_alone_and_the_choice_is_the_default_now():
    import json

    assert CANDIDATES["default"] == DEFAULT == UnlearnConfig(path_rho=0.0, reset_fraction=0.0)
    for name, cfg in CANDIDATES.items():
        assert UnlearnConfig(**{**cfg.__dict__, "path_rho": 0.0}) == DEFAULT
        assert (cfg.path_rho > 0) == (name != "default")
    doc = json.loads((REPO / "reports" / "benchmarks" / "path_step.json").read_text())
    assert doc["chosen"] == choose(doc["development"])  # the committed choice follows the rule
    assert CANDIDATES[doc["chosen"]] == UnlearnConfig()  # and is the library's default


def test_a_change_must_meet_more_bars_than_the_default():
    met = {"a": {"default": 3, "path_1": 3, "path_2": 3}, "b": {"default": 2, "path_1": 2, "path_0.5": 2}}
    assert choose(_victims(met)) == "default"  # a tie keeps the default
    met["b"]["path_2"] = 3
    met["b"]["path_1"] = 3
    assert choose(_victims(met)) == "path_1"  # one more pair: the smaller ρ of the two that met it
    empty = {"c": {"candidates": {}}}
    assert choose({**_victims(met), **empty}) == "path_1"  # a victim judged clean has no say


def test_no_development_victim_is_a_families_row():
    """Every development victim plants its trigger with an attack seed no families row uses."""
    grid = yaml.safe_load((REPO / "grids" / "families.yaml").read_text())
    seeds = {({**grid["parameters"], **v["set"]})["seed"] for v in grid["variants"]}
    assert {a.seed for a in DEV_VICTIMS.values()}.isdisjoint(seeds)
    assert {"dev_wanet_t3", "dev_all_to_all_4x4"} <= set(DEV_VICTIMS)
