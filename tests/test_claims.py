"""Notebook 04's claims as library functions: each judges hand-made rows both ways."""

import pytest

from baeraser_lib.lab import claims as C

BEFORE = {"clean_acc": 0.93, "asr": 1.0}


def scores(acc, asr, der):
    return {"clean_acc": acc, "asr": asr, "der": der}


def test_beta_claims():
    rows = [{"beta_over_alpha": 1e-4, "asr": 0.0, "clean_acc": 0.7, "acc_drop_points": 23.0, "der": 0.6},
            {"beta_over_alpha": 100.0, "asr": 0.4, "clean_acc": 0.92, "acc_drop_points": 1.0, "der": 0.8}]
    assert C.tiny_beta_forgets(rows, True)["reproduced"]
    assert C.large_beta_keeps_accuracy(rows, True)["reproduced"]
    assert C.beta_trades_asr_for_accuracy(rows, True)["reproduced"]
    assert not C.tiny_beta_forgets(rows, False)["reproduced"]  # an empty pool reproduces nothing
    flat = [dict(rows[0], acc_drop_points=1.0, clean_acc=0.92), rows[1]]
    assert not C.tiny_beta_forgets(flat, True)["reproduced"]


def test_holding_claims():
    by_ratio = {0.01: {"baeraser": scores(0.91, 0.03, 0.97), "finetune": scores(0.92, 0.9, 0.55),
                       "fineprune": scores(0.9, 0.9, 0.5), "nad": scores(0.9, 0.5, 0.7)},
                0.05: {"baeraser": scores(0.92, 0.01, 0.99), "finetune": scores(0.92, 0.8, 0.6),
                       "fineprune": scores(0.9, 0.9, 0.5), "nad": scores(0.9, 0.5, 0.7)}}
    assert C.small_holding_suffices(by_ratio, BEFORE, True)["reproduced"]
    assert not C.small_holding_suffices(by_ratio, BEFORE, False)["reproduced"]
    assert C.more_holding_helps(by_ratio)["reproduced"]
    assert C.baeraser_beats_baselines_at_every_ratio(by_ratio)["reproduced"]
    by_ratio[0.01]["nad"]["der"] = 0.98
    v = C.baeraser_beats_baselines_at_every_ratio(by_ratio)
    assert not v["reproduced"] and "nad 0.980" in v["evidence"]


def test_size_claims_need_two_of_three_baselines():
    by_size = {3: {m: scores(0.9, 0.0, 0.9) for m in ("baeraser", "finetune", "fineprune", "nad")},
               7: {m: scores(0.9, 0.0, 0.8) for m in ("finetune", "fineprune", "nad")} | {"baeraser": scores(.9, 0, .95)}}
    assert C.baeraser_improves_with_size(by_size)["reproduced"]
    assert C.baselines_worsen_with_size(by_size)["reproduced"]
    by_size[7]["finetune"]["der"] = by_size[7]["fineprune"]["der"] = 0.95
    assert not C.baselines_worsen_with_size(by_size)["reproduced"]


def test_iteration_claims():
    curve = [{"epoch": e, "test_asr": a, "test_clean_acc": c}
             for e, a, c in ((0, 1.0, 0.93), (0.5, 0.5, 0.92), (1.0, 0.01, 0.90), (2.0, 0.0, 0.88))]
    assert C.erased_without_forgetting(curve, True)["reproduced"]
    assert C.few_iterations_suffice(curve, True)["reproduced"]
    assert C.lower_asr_costs_accuracy(curve, True)["reproduced"]
    late = [dict(h, epoch=h["epoch"] * 3) for h in curve]
    assert not C.few_iterations_suffice(late, True)["reproduced"]


def test_position_correct_label_and_recovery_claims():
    pos = {"none": {"bottom_right": 1.0, "center": 0.1}, "baeraser": {"bottom_right": 0.01, "center": 0.06}}
    v = C.no_position_brings_it_back(pos, True)
    assert not v["reproduced"] and "fired before at 1 of 2" in v["evidence"]
    correct = {"a": {"acc_drop_points": 0.5}, "b": {"acc_drop_points": 0.2}}
    assert C.correct_labels_keep_accuracy(correct, "a", 1.0, True)["reproduced"]
    assert C.penalty_protects_correct_memories(correct, "a", "b", 1.0, 100.0, True)["reproduced"]
    rec = {3: {"found": True, "mask_share_on_true_patch": 0.8}, 7: {"found": False}}
    assert not C.recovered_matches_true(rec)["reproduced"]
    assert C.recovered_matches_true({3: rec[3]})["reproduced"]


def test_entropy_claims():
    lam = {0.0: {"target_found": True, "spread": 0.01, "der": 0.97}, 1.0: {"target_found": True, "spread": 0.05,
                                                                             "der": 0.968}}
    assert C.entropy_spreads_triggers(lam)["reproduced"]
    assert C.spread_costs_no_unlearning(lam, True)["reproduced"]
    lam[1.0]["target_found"] = False
    assert not C.entropy_spreads_triggers(lam)["reproduced"]


def test_there_are_nineteen_claims():
    funcs = [f for f in vars(C).values() if callable(f) and getattr(f, "__module__", "") == C.__name__
             and f.__name__ not in ("verdict", "verdict_lines", "drop", "reduction", "matched", "_lost",
                                    "_correct_evidence", "_retuned_evidence", "unlearning_checks")]
    assert len(funcs) == 19, sorted(f.__name__ for f in funcs)


def test_erased_for_good_claims():
    rows = {"default": {"asr": 0.001, "asr_after": 0.03}, "paper": {"asr": 0.008, "asr_after": 0.99}}
    assert C.default_stays_erased(rows, "default", 0.05, True)["reproduced"]
    assert not C.default_stays_erased(rows, "default", 0.05, False)["reproduced"]  # empty pool: nothing tested
    assert not C.default_stays_erased({**rows, "default": {"asr": 0.001, "asr_after": 0.16}}, "default", 0.05,
                                      True)["reproduced"]  # above reference + 0.10
    assert not C.default_stays_erased({**rows, "default": {"asr": 0.05, "asr_after": 0.03}}, "default", 0.05,
                                      True)["reproduced"]  # not erased in the first place
    v = C.weight_anchor_relearns(rows, "paper", 0.05, True)
    assert v["reproduced"] and "re-tuned 0.9900" in v["evidence"] and "0.0500" in v["evidence"]
    assert not C.weight_anchor_relearns(rows, "default", 0.05, True)["reproduced"]


@pytest.mark.parametrize("name", ["LOW_ASR", "FORGETTING_POINTS", "KEPT_POINTS", "MATCH_SHARE"])
def test_thresholds_are_named_constants(name):
    assert isinstance(getattr(C, name), (int, float))


def test_notebook_03s_bars_come_from_the_shared_constants_and_judge_both_ways():
    results = {"baeraser": scores(0.92, 0.005, 0.99), "finetune": scores(0.92, 0.9, 0.5), "nc": scores(0.92, 0.01, 0.995)}
    reactivated = {"baeraser": {"asr_after": 0.14}, "clean reference": {"asr_after": 0.05}}
    checks = C.unlearning_checks(results, drop_points=1.5, cost_ratio=0.3, reactivated=reactivated)
    by_start = {k.split(" ≤")[0].split(":")[0]: v for k, v in checks.items()}
    assert f"recovery + unlearning ≤ {C.COST_SHARE:.0%} of the victim's training time" in checks  # 25%, not 50%
    assert by_start["BAERASER ASR"] and by_start["BAERASER accuracy drop"]
    assert not by_start["longer-term goal"]  # 1.5 points > 1
    assert checks["BAERASER's DER ≥ every baseline's"] and not checks["BAERASER's DER ≥ every peer's"]
    assert not by_start["recovery + unlearning"]  # 0.3 > 0.25
    assert by_start["re-tuned, BAERASER's ASR"]  # 0.14 ≤ 0.05 + 0.10
    worse = C.unlearning_checks({"baeraser": scores(0.9, 0.03, 0.9)}, 2.5, float("nan"),
                                {"baeraser": {"asr_after": 0.2}, "clean reference": {"asr_after": 0.05}})
    assert not any(worse.values())
    assert not any(k.startswith("recovery") for k in worse)  # an external model's cost is unknown, not missed
    assert not any(k.startswith("BAERASER's DER") for k in worse)  # nothing compared: nothing judged
