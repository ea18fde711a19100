"""The unlearning-schedule study's fixed parts: its bars and its rule of choice."""

from baeraser_lib.lab.claims import REACTIVATION_MARGIN
from baeraser_lib.lab.schedule_study import BARS, CANDIDATES, DEV_VICTIMS, bars, choose


def _victims(met: dict[str, dict[str, list[str]]]) -> dict:
    """{victim: {candidate: bars met}} → the shape `choose` reads (every other bar missed)."""
    return {v: {"candidates": {c: {"bars": {b: b in got.get(c, []) for b in BARS}} for c in CANDIDATES}}
            for v, got in met.items()}


def test_the_fewest_epochs_meeting_every_bar_on_every_victim_win():
    every = list(BARS)
    met = {"a": {"cosine_3": every, "cosine_4": every, "cosine_5": every, "cosine_2": every},
           "b": {"cosine_3": every, "cosine_4": every, "cosine_5": every, "cosine_2": every[:3]}}
    assert choose(_victims(met)) == "cosine_3"


def test_without_a_full_pass_the_most_bars_win_and_ties_go_to_fewer_epochs():
    met = {"a": {"constant_10": ["asr", "acc_drop_points", "stays_erased"], "cosine_4": ["asr", "cost_ratio"],
                 "cosine_2": ["asr", "cost_ratio"], "cosine_5": ["asr"]},
           "b": {"constant_10": ["asr", "acc_drop_points", "stays_erased"], "cosine_4": ["asr", "cost_ratio"],
                 "cosine_2": ["asr", "cost_ratio"]}}
    assert choose(_victims(met)) == "constant_10"  # 6 bars met against 4
    met["a"]["cosine_4"].append("stays_erased")
    met["b"]["cosine_4"].append("stays_erased")
    met["a"]["cosine_3"] = ["asr", "cost_ratio", "stays_erased"]
    met["b"]["cosine_3"] = ["asr", "cost_ratio", "stays_erased"]
    assert choose(_victims(met)) == "cosine_3"  # 6 against 6: the fewer epochs


def test_the_bars_are_the_issues():
    fig = {"asr": 0.02, "acc_drop_points": 2.0, "cost_ratio": 0.25, "reactivated_asr": 0.3}
    assert bars(fig, 0.3 - REACTIVATION_MARGIN) == dict.fromkeys(BARS, True)
    worse = {"asr": 0.021, "acc_drop_points": 2.01, "cost_ratio": 0.26, "reactivated_asr": 0.31}
    assert bars(worse, 0.3 - REACTIVATION_MARGIN) == dict.fromkeys(BARS, False)


def test_no_development_victim_is_a_families_row():
    """The victims that choose the schedule are not the ones it is scored on: every families row
    plants its trigger with another attack seed and another target label."""
    import yaml

    from baeraser_lib.lab.reports import REPO

    grid = yaml.safe_load((REPO / "grids" / "families.yaml").read_text())
    rows = [{**grid["parameters"], **v["set"]} for v in grid["variants"]]
    seeds, targets = {r["seed"] for r in rows}, {r.get("target_label", 0) for r in rows}
    for attack in DEV_VICTIMS.values():
        assert attack.seed not in seeds and attack.target_label not in targets
