"""The reference-mask test of natural shortcuts (benchmarks/reference_masks.py): its committed JSON
follows from the sizes it stores, and its plain verdict is the trigger-agnostic benchmark's."""

import json
import math

import pytest

from baeraser_lib.defenses.detection import DEFAULT_THRESHOLD, anomaly_index, flag_labels, size_anomaly_index
from baeraser_lib.lab.reports import REPO
from baeraser_lib.lab.site import reference_masks_markdown

PATH = REPO / "reports" / "benchmarks" / "natural_shortcuts_reference_masks.json"
SOURCE = REPO / "reports" / "benchmarks" / "trigger_agnostic.json"


@pytest.fixture(scope="module")
def doc():
    return json.loads(PATH.read_text())


def test_every_suspect_of_the_source_is_scored_with_the_sizes_it_stored(doc):
    source = {r["victim"]: r for r in json.loads(SOURCE.read_text())["rows"]}
    assert set(doc["rows"]) == set(source)
    for victim, row in doc["rows"].items():
        assert row["sizes"] == source[victim]["mask_sizes"]
        assert row["plain"]["index"] == pytest.approx(source[victim]["anomaly_index"])


def test_each_relative_verdict_follows_from_the_stored_sizes(doc):
    assert doc["threshold"] == DEFAULT_THRESHOLD
    for row in doc["rows"].values():
        assert row["plain"]["flagged"] == flag_labels(size_anomaly_index(row["sizes"]))
        for name, ref in doc["references"].items():
            logs = [math.log(max(s, 0.1)) - math.log(max(r, 0.1)) for s, r in zip(row["sizes"], ref["sizes"])]
            index = anomaly_index(logs)
            assert row[name]["index"] == pytest.approx(index)
            assert row[name]["flagged"] == flag_labels(index, doc["threshold"])
            target = row["true_target"]
            assert row[name]["target_flagged"] == (None if target is None else target in row[name]["flagged"])


def test_the_summary_counts_the_rows(doc):
    rows = list(doc["rows"].values())
    for name, s in doc["summary"].items():
        targeted = [r for r in rows if r["true_target"] is not None]
        assert s["single_target_victims"] == len(targeted)
        assert s["targets_flagged"] == sum(r[name]["target_flagged"] for r in targeted)
        assert s["clean_judged_clean"] == sum(not r[name]["flagged"] for r in rows if r["attack"] is None)
        assert s["models_with_a_shortcut_flagged"] == sum(
            any(k in (6, 8) and k != r["true_target"] for k in r[name]["flagged"]) for r in rows)


def test_the_readme_table_names_every_model_and_index(doc):
    text = reference_masks_markdown(PATH)
    for victim in doc["rows"]:
        assert f"| {victim} |" in text
    for name in doc["summary"]:
        assert f"| {name} | {doc['summary'][name]['targets_flagged']} of " in text


def test_notebook_02_quotes_the_committed_counts(doc):
    text = " ".join((REPO / "notebooks" / "02_recover_triggers.py").read_text().replace("#", " ").split())
    s = doc["summary"]
    assert (f"small CNN as the reference {s['small_cnn']['targets_flagged']} of {s['small_cnn']['single_target_victims']}"
            f" targets were flagged, with ResNet-18 {s['resnet18_w16']['targets_flagged']} of "
            f"{s['resnet18_w16']['single_target_victims']}, against {s['plain']['targets_flagged']} for the plain") in text
    assert {s[n]["clean_judged_clean"] for n in s} == {1}  # "still only 1 of 3 clean models was judged clean"
    assert f"still only 1 of {s['plain']['clean_models']} clean models was judged clean" in text
