"""The weight-reset study's fixed parts: its victims, candidates and rule of choice."""

from baeraser_lib.defenses import UnlearnConfig
from baeraser_lib.lab import path_study
from baeraser_lib.lab.reset_study import CANDIDATES, DEFAULT, DEV_VICTIMS, choose
from baeraser_lib.lab.schedule_study import BARS


def config_from_repr(text: str) -> UnlearnConfig:
    """The UnlearnConfig a committed study wrote as its repr; a field added since takes its default,
    which by design is the behaviour from before it existed (e.g. `invariance_at`)."""
    import ast
    import re

    body = re.fullmatch(r"UnlearnConfig\((.*)\)", text).group(1)
    return UnlearnConfig(**{k: ast.literal_eval(v) for k, v in re.findall(r"(\w+)=('[^']*'|[^,]+)", body)})


def victims_meeting(met: dict[str, dict[str, int]], candidates=CANDIDATES) -> dict:
    """{victim: {candidate: how many bars met}} → the shape a study's `choose` reads (shared by the
    studies' tests)."""
    return {v: {"candidates": {c: {"bars": {b: i < got.get(c, 0) for i, b in enumerate(BARS)}} for c in candidates}}
            for v, got in met.items()}



def test_the_candidates_differ_from_the_default_before_in_q_alone():
    assert CANDIDATES["default"] == DEFAULT
    assert DEFAULT.reset_fraction == 0.0 and DEFAULT.path_rho == path_study.CANDIDATES["path_0.5"].path_rho
    for name, cfg in CANDIDATES.items():
        assert UnlearnConfig(**{**cfg.__dict__, "reset_fraction": 0.0}) == DEFAULT
        assert (cfg.reset_fraction > 0) == (name != "default")
    assert DEV_VICTIMS == path_study.DEV_VICTIMS


def test_the_committed_choice_follows_the_rule():
    import json

    from baeraser_lib.lab.reports import REPO

    doc = json.loads((REPO / "reports" / "benchmarks" / "weight_reset.json").read_text())
    assert {k: config_from_repr(v) for k, v in doc["candidates"].items()} == CANDIDATES
    assert doc["chosen"] == choose(doc["development"])


def test_a_change_must_meet_more_bars_than_the_default():
    met = {"a": {"default": 3, "reset_0.3": 3}, "b": {"default": 2, "reset_0.5": 2}}
    assert choose(victims_meeting(met)) == "default"  # a tie keeps the default
    met["b"]["reset_0.5"] = 3
    met["b"]["reset_0.3"] = 3
    assert choose(victims_meeting(met)) == "reset_0.3"  # one more pair: the smaller q of the two that met it


def test_the_rule_s_pick_did_worse_on_the_families_rows_and_is_not_the_default():
    """The development rule picked q = 0.1; over the families rows it met fewer (row, bar) pairs
    than the default (fewer on 4 rows, as many on 9), so the default (no reset) stays. The path
    step passed the same check."""
    import json

    import yaml

    from baeraser_lib.lab.reports import REPO
    from baeraser_lib.lab.schedule_study import confirmed

    rows = {v["name"] for v in yaml.safe_load((REPO / "grids" / "families.yaml").read_text())["variants"]}
    bench = REPO / "reports" / "benchmarks"
    reset = json.loads((bench / "weight_reset.json").read_text())
    assert reset["chosen"] != "default" and not confirmed(reset["families"], rows)
    assert UnlearnConfig() == DEFAULT
    path = json.loads((bench / "path_step.json").read_text())
    assert confirmed(path["families"], rows) and path_study.CANDIDATES[path["chosen"]] == UnlearnConfig()


def test_confirmation_counts_every_bar_of_every_row_and_needs_every_row():
    import pytest

    from baeraser_lib.lab.schedule_study import confirmed

    good = {"asr": 0.0, "acc_drop_points": 1.0, "cost_ratio": 0.1, "reactivated_asr": 0.1}
    worse = {**good, "acc_drop_points": 3.0}
    rows = {"a": {"default": good, "chosen": worse, "reference_reactivated_asr": 0.1},
            "b": {"default": worse, "chosen": good, "reference_reactivated_asr": 0.1}}
    assert confirmed(rows, ["a", "b"])  # as many pairs: it may stay
    assert not confirmed(rows, ["a"])
    with pytest.raises(ValueError, match="not run yet"):
        confirmed(rows, ["a", "b", "c"])
