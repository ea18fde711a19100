"""The grid-against-study timing table: which rows returned the same model, and how far the
seconds (and so the cost ratio) moved between the two runs."""

import json

import pytest

from baeraser_lib.lab.timing_report import timing_markdown, timing_rows


def _row(families, name, asr, acc, train, recovery, unlearn):
    (families / name).mkdir(parents=True)
    (families / name / "03_unlearn.json").write_text(json.dumps({
        "methods": {"baeraser": {"asr": asr, "clean_acc": acc, "reactivated_asr": 0.1, "seconds": unlearn}},
        "victim_train_seconds": train, "recovery_seconds": recovery, "cost_ratio": (recovery + unlearn) / train}))


def _study(name, asr, acc, train, recovery, unlearn):
    return name, {"train_seconds": train, "recovery_seconds": recovery,
                  "chosen": {"asr": asr, "clean_acc": acc, "reactivated_asr": 0.1, "unlearn_seconds": unlearn,
                             "cost_ratio": (recovery + unlearn) / train}}


@pytest.fixture
def bench(tmp_path):
    fam = tmp_path / "families"
    _row(fam, "slow", 0.01, 0.91, 300.0, 40.0, 40.0)  # same model, unlearning twice as slow: over the bar
    _row(fam, "even", 0.02, 0.90, 200.0, 20.0, 10.0)  # same model, same seconds
    _row(fam, "other", 0.50, 0.90, 200.0, 20.0, 30.0)  # another default ran in the grid: not the same model
    _row(fam, "clean", 0.80, 0.92, 100.0, 10.0, 0.0)  # nothing unlearned
    study = tmp_path / "study.json"
    study.write_text(json.dumps({"families": dict([
        _study("slow", 0.01, 0.91, 300.0, 40.0, 20.0), _study("even", 0.02, 0.90, 200.0, 20.0, 10.0),
        _study("other", 0.01, 0.90, 200.0, 20.0, 10.0), _study("clean", 0.80, 0.92, 100.0, 10.0, 0.0),
        _study("not_in_grid", 0.0, 0.9, 1.0, 1.0, 1.0)])}))
    return fam, study


def test_rows_pair_the_grid_with_the_study_and_say_whether_the_model_is_the_same(bench):
    rows = {r["row"]: r for r in timing_rows(*bench)}
    assert sorted(rows) == ["clean", "even", "other", "slow"]  # a study row with no grid report is left out
    assert rows["slow"]["same_model"] and not rows["other"]["same_model"]
    assert rows["slow"]["unlearn"] == (40.0, 20.0) and not rows["clean"]["unlearned"]


def test_table_gives_each_ratio_and_names_the_rows_the_bar_judges_differently(bench):
    lines = {line.split(" | ")[0].lstrip("| "): line for line in timing_markdown(*bench).splitlines() if line}
    assert lines["slow"] == "| slow | yes | 300 / 300 | 40 / 40 | 40.0 / 20.0 | 2.00 | 0.267 / 0.200 |"
    assert lines["other"].startswith("| other | **no** |")
    assert "nothing unlearned" in lines["clean"]
    summary = next(v for k, v in lines.items() if k.startswith("Over"))
    assert "Over the 2 rows" in summary and "unlearning 1.00 to 2.00 (median 1.50)" in summary
    assert "cost ratio, grid − study, +0.000 to +0.067." in summary
    assert summary.endswith("opposite sides of the bar (0.25) in the two runs: slow.")


def test_the_work_table_judges_each_row_by_image_passes_and_sums_up(tmp_path):
    from baeraser_lib.lab.timing_report import work_markdown

    def row(rec: int, unl: int, ratio_s: float, same=True) -> dict:
        train = 720000
        return {"recovery_work": rec, "unlearning_work": unl, "training_work": train,
                "work_ratio": (rec + unl) / train, "seconds_cost_ratio_in_grid": ratio_s,
                "same_pool_labels": same, "same_model_as_grid": True}

    path = tmp_path / "work_ratio.json"
    path.write_text(json.dumps({"rows": {"a": row(100000, 50000, 0.17), "b": row(150000, 60000, 0.2, same=False),
                                         "c": row(90000, 0, 0.1)}}))
    table = work_markdown(path)
    assert "| a | 100,000 | 50,000 | 720,000 | 0.208 met | 0.170 | yes / yes |" in table
    assert "| b | 150,000 | 60,000 | 720,000 | 0.292 MISSED | 0.200 | NO / yes |" in table
    assert "Over 3 rows: work ratio 0.125 to 0.292 (median 0.208), 2 within the bar" in table
    assert "unlearning alone 0.069 to 0.083 where it ran" in table  # row c unlearned nothing
