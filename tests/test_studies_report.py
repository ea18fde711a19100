"""The README's table of #18's studies against re-learning: what it reads and what it says."""

import json

from baeraser_lib.lab import studies_report as SR
from baeraser_lib.lab.reports import REPO
from baeraser_lib.lab.schedule_study import BARS


def _fig(asr_after: float, points: float, met: int) -> dict:
    return {"reactivated_asr": asr_after, "acc_drop_points": points,
            "bars": {b: i < met for i, b in enumerate(BARS)}}


def test_a_study_line_counts_pairs_and_finds_the_lowest_re_tuned_asr_of_the_watched_victims():
    doc = {"candidates": {"default": "", "k_1": "", "k_2": ""}, "chosen": "default", "development": {
        "dev_wanet_t3": {"reference_reactivated_asr": 0.02, "candidates": {
            "default": _fig(0.5, 1.0, 3), "k_1": _fig(0.3, 2.5, 2), "k_2": _fig(0.1, 9.0, 1)}},
        "dev_blended_t5": {"reference_reactivated_asr": 0.9, "candidates": {}},  # judged clean: left out
        "dev_other": {"reference_reactivated_asr": 0.1, "candidates": {
            "default": _fig(0.1, 1.0, 4), "k_1": _fig(0.2, 1.0, 4), "k_2": _fig(0.2, 1.0, 2)}}}}
    line = SR.study_line("toy", doc, "a knob")
    assert line["pairs"] == {"default": 7, "k_1": 6, "k_2": 3} and line["of"] == 2 * len(BARS)
    w = line["watched"]["dev_wanet_t3"]
    assert (w["default"], w["best"], w["best_asr"], w["best_points"]) == (0.5, "k_2", 0.1, 9.0)
    assert abs(w["bar"] - 0.12) < 1e-12 and "dev_all_to_all_4x4" not in line["watched"]
    assert line["families_confirmed"] is None  # no pick: the families check never ran


def test_the_table_has_one_line_per_committed_study_in_the_order_they_ran():
    bench = REPO / "reports" / "benchmarks"
    lines = SR.studies_lines(bench)
    present = [name for name, file, _ in SR.STUDIES
               if (bench / file).exists() and json.loads((bench / file).read_text()).get("chosen")]
    assert [s["study"] for s in lines] == present and len(present) >= 5
    by_name = {s["study"]: s for s in lines}
    assert by_name["path step"]["families_confirmed"] is True  # adopted: the default since
    assert by_name["weight reset"]["families_confirmed"] is False  # picked, then failed the families check
    table = SR.studies_markdown(bench)
    assert table.count("\n") == len(present) + 1 and "passed: adopted" in table
