"""The README's table of `benchmarks/reactivation_seeds.py`: the re-tuning check over attacker seeds."""

import json

from baeraser_lib.lab import seeds_report as S


def _row(baeraser, reference, grid=None, seed0=True, same=True):
    margin = 0.1
    grid = grid or (baeraser[0], reference[0])
    return {"seeds": list(range(len(baeraser))), "baeraser_retuned": baeraser, "reference_retuned": reference,
            "met": [b <= r + margin for b, r in zip(baeraser, reference)], "same_model_as_grid": same,
            "seed0_as_grid": seed0, "grid": {"baeraser_retuned": grid[0], "reference_retuned": grid[1]}}


def test_verdicts_per_seed_on_the_means_and_the_grids():
    steady = S.seed_verdicts(_row([0.05, 0.06, 0.04], [0.08, 0.07, 0.09]), 0.1)
    assert steady == {"grid": True, "seeds_met": 3, "seeds": 3, "on_means": True, "agree": True}
    split = S.seed_verdicts(_row([0.15, 0.40, 0.10], [0.08, 0.07, 0.09]), 0.1)
    assert split["grid"] and split["seeds_met"] == 2 and not split["agree"]
    assert not split["on_means"]  # mean 0.217 against 0.08 + 0.1


def test_the_table_names_the_rows_whose_seeds_disagree_and_counts_the_reproductions(tmp_path):
    doc = {"margin": 0.1, "rows": {"steady": _row([0.05, 0.06], [0.08, 0.07]),
                                   "split": _row([0.15, 0.40], [0.08, 0.07], seed0=False),
                                   "missed": _row([0.9, 0.8], [0.1, 0.1], same=False)}}
    path = tmp_path / "seeds.json"
    path.write_text(json.dumps(doc))
    md = S.seeds_markdown(path)
    lines = md.splitlines()
    assert lines[0].startswith("| families row |") and len([x for x in lines if x.startswith("| ")]) == 4
    assert "| steady | 0.050 / 0.080 | 0.050–0.060 (0.055) | 0.070–0.080 (0.075) | 2 of 2 | met | met |" in md
    assert "| split | 0.150 / 0.080 |" in md and "1 of 2 | MISSED | met (seeds disagree) |" in md
    assert "| missed |" in md and "0 of 2 | MISSED | MISSED |" in md
    assert "held on every seed on 2; the seeds disagree on 1: split." in md
    assert "the bar is met on 1 rows (the grid: 2)" in md
    assert "Seed 0 gave the grid's figures again on 2 of the 3 rows that ran it" in md and "grid's ASR on 2 of 3" in md
