"""The paper's ablation claims as tests of measured numbers: one function per claim, each
returning a verdict `{"claim", "reproduced", "evidence"}` computed from the rows notebook 04
measured (never typed by hand). The thresholds are ours, fixed here before any run; the paper
gives figures, not tests. Notebook 04 narrates and plots; the judging lives here.

Row shapes (all figures on the evaluation split, with the victim's true trigger):
    scores       {"clean_acc", "asr", "der", ...}: one model
    beta_rows    [{"beta_over_alpha", "asr", "clean_acc", "acc_drop_points", "der"}], β/α ascending
    by_ratio     {holding ratio: {defense: scores}}; by_size {trigger size: {defense: scores}}
    curve        [{"epoch", "test_asr", "test_clean_acc"}]: one unlearning run, in order
    positions    {defense or "none": {position: ASR}}
    correct      {run name: scores + "acc_drop_points"}
    recovered    {trigger size: {"found", "mask_share_on_true_patch" | "pixels_within_0.25" | "size_differs"}}
    by_lambda    {λ_H: {"target_found", "spread", "der"}}
    retuned      {setting: scores + "asr_after"}, and the clean reference's "asr_after"
"""

from __future__ import annotations

import math

from ..defenses import names

BASELINES = names("baseline")
PEERS = names("peer")

LOW_ASR = 0.02  # "the backdoor is erased": ASR at most 2%
FORGETTING_POINTS = 10  # "catastrophic": more than 10 points of accuracy lost
KEPT_POINTS = 2  # "accuracy kept": at most 2 points lost
CORRECT_LABEL_POINTS = 1  # correct-label unlearning "leaves accuracy intact": at most 1 point lost
SMALL_DH_REDUCTION = 0.95  # with the smallest D_h, ASR at least 95% lower …
SMALL_DH_POINTS = 5  # … with fewer than 5 points lost
DER_SLACK = 0.005  # a DER step down smaller than this is noise, not a trend
POSITION_ASR = 0.05  # "no position brings the backdoor back": ASR at most 5% at every position
MATCH_SHARE = 0.5  # a recovered trigger "matches": > 50% of its mask (or pixels) on the true one
PIXEL_TOLERANCE = 0.25  # patch form: a recovered pixel within 0.25 of the true value
REACTIVATION_MARGIN = 0.10  # "erased for good": re-tuned ASR at most the clean reference's + 0.10 (issue #18)
COST_SHARE = 0.25  # "cheap": recovery + unlearning at most 25% of the victim's training time


def verdict(claim: str, reproduced: bool, evidence: str) -> dict:
    """One claim of the paper against what was measured."""
    return {"claim": claim, "reproduced": bool(reproduced), "evidence": evidence}


def verdict_lines(verdicts: list[dict]) -> str:
    """Verdicts as text: one claim per line, its evidence indented beneath."""
    return "\n".join(f"{'reproduced' if v['reproduced'] else 'NOT reproduced':<15}{v['claim']}\n{'':15}{v['evidence']}"
                     for v in verdicts)


def drop(after: dict, before: dict) -> float:
    """Accuracy lost, in points."""
    return 100 * (before["clean_acc"] - after["clean_acc"])


def reduction(after: dict, before: dict) -> float:
    """Relative ASR reduction (NaN when there was no ASR to reduce)."""
    return (before["asr"] - after["asr"]) / before["asr"] if before["asr"] > 0 else float("nan")


# -- 0 · notebook 03's bars on one victim ----------------------------------------------------

GOAL_ASR, GOAL_POINTS = 0.01, 1  # the longer-term goal: ASR at most 1%, at most 1 point lost


def unlearning_checks(results: dict, drop_points: float, cost_ratio: float, reactivated: dict | None = None) -> dict:
    """Notebook 03's bars for BAERASER on one victim, claim → met, from the same constants as the
    grid and notebook 04: `results` maps each defense to its scores ("asr", "der"),
    `reactivated` each model to its re-tuned "asr_after" (the clean reference's included). The
    cost bar is left out when the victim's training time is unknown (`cost_ratio` NaN), and a DER
    bar when no baseline (or peer) ran. Unlike the claims below it returns bools, not verdicts."""
    b = results["baeraser"]
    checks = {
        f"BAERASER ASR ≤ {LOW_ASR:g}": b["asr"] <= LOW_ASR,
        f"BAERASER accuracy drop ≤ {KEPT_POINTS:g} points": drop_points <= KEPT_POINTS,
        f"longer-term goal: ASR ≤ {GOAL_ASR:g} and drop ≤ {GOAL_POINTS:g} point":
            b["asr"] <= GOAL_ASR and drop_points <= GOAL_POINTS,
    }
    for kind, group in (("baseline", BASELINES), ("peer", PEERS)):
        ran = [m for m in group if m in results]
        if ran:  # none compared: nothing to judge
            checks[f"BAERASER's DER ≥ every {kind}'s"] = all(b["der"] >= results[m]["der"] for m in ran)
    if math.isfinite(cost_ratio):  # NaN: an external model, whose training time is unknown
        checks[f"recovery + unlearning ≤ {COST_SHARE:.0%} of the victim's training time"] = cost_ratio <= COST_SHARE
    if reactivated:
        checks[f"re-tuned, BAERASER's ASR ≤ the clean reference's + {REACTIVATION_MARGIN:g}"] = \
            reactivated["baeraser"]["asr_after"] <= reactivated["clean reference"]["asr_after"] + REACTIVATION_MARGIN
    return checks


# -- 1 · β/α --------------------------------------------------------------------------------

def tiny_beta_forgets(beta_rows: list[dict], pool_ok: bool) -> dict:
    lo = beta_rows[0]
    return verdict(f"tiny β/α ({lo['beta_over_alpha']:g}): ASR ≤ {100 * LOW_ASR:g}% but more than "
                   f"{FORGETTING_POINTS} points of accuracy lost",
                   pool_ok and lo["asr"] <= LOW_ASR and lo["acc_drop_points"] > FORGETTING_POINTS,
                   f"β/α = {lo['beta_over_alpha']:g}: ASR {lo['asr']:.4f}, {lo['acc_drop_points']:.2f} points lost")


def large_beta_keeps_accuracy(beta_rows: list[dict], pool_ok: bool) -> dict:
    hi = beta_rows[-1]
    return verdict(f"large β/α ({hi['beta_over_alpha']:g}): accuracy kept (at most {KEPT_POINTS} points lost)",
                   pool_ok and hi["acc_drop_points"] <= KEPT_POINTS,
                   f"β/α = {hi['beta_over_alpha']:g}: {hi['acc_drop_points']:.2f} points lost, ASR {hi['asr']:.4f}")


def beta_trades_asr_for_accuracy(beta_rows: list[dict], pool_ok: bool) -> dict:
    lo, hi = beta_rows[0], beta_rows[-1]
    return verdict("raising β/α keeps more accuracy and leaves more ASR (largest vs smallest β/α, both not lower, "
                   "one higher)",
                   pool_ok and hi["clean_acc"] >= lo["clean_acc"] and hi["asr"] >= lo["asr"]
                   and (hi["clean_acc"] > lo["clean_acc"] or hi["asr"] > lo["asr"]),
                   f"clean acc {lo['clean_acc']:.4f} → {hi['clean_acc']:.4f}, ASR {lo['asr']:.4f} → {hi['asr']:.4f}")


# -- 2 · holding ratio ----------------------------------------------------------------------

def small_holding_suffices(by_ratio: dict, before: dict, pooled_at_smallest: bool) -> dict:
    small = min(by_ratio)
    b = by_ratio[small]["baeraser"]
    return verdict(f"with {100 * small:g}% clean data BAERASER still lowers ASR by ≥ {100 * SMALL_DH_REDUCTION:g}% "
                   f"and loses < {SMALL_DH_POINTS} points",
                   pooled_at_smallest and reduction(b, before) >= SMALL_DH_REDUCTION and drop(b, before) < SMALL_DH_POINTS,
                   f"D_h {100 * small:g}%: ASR {before['asr']:.4f} → {b['asr']:.4f} "
                   f"({100 * reduction(b, before):.1f}% lower), {drop(b, before):.2f} points lost")


def more_holding_helps(by_ratio: dict) -> dict:
    small, large = min(by_ratio), max(by_ratio)
    der = {r: by_ratio[r]["baeraser"]["der"] for r in by_ratio}
    return verdict("BAERASER does better with more clean data (DER at the largest D_h > at the smallest)",
                   der[large] > der[small], "DER " + ", ".join(f"{100 * r:g}%: {d:.4f}" for r, d in der.items()))


def baeraser_beats_baselines_at_every_ratio(by_ratio: dict) -> dict:
    beaten = [(r, m) for r in by_ratio for m in BASELINES if m in by_ratio[r]
              and by_ratio[r][m]["der"] > by_ratio[r]["baeraser"]["der"]]
    shown = ["baeraser"] + BASELINES
    return verdict("BAERASER's DER ≥ every baseline's at every holding ratio", not beaten,
                   "; ".join(f"{100 * r:g}%: " + ", ".join(f"{m} {by_ratio[r][m]['der']:.3f}" for m in shown
                                                           if m in by_ratio[r]) for r in by_ratio))


# -- 3 · trigger size -----------------------------------------------------------------------

def baeraser_improves_with_size(by_size: dict, oracle: str = "") -> dict:
    sizes = list(by_size)
    der = [by_size[s]["baeraser"]["der"] for s in sizes]
    s0, s1 = sizes[0], sizes[-1]
    return verdict(f"BAERASER gets better as the trigger grows ({s0}×{s0} → {s1}×{s1}: higher DER, no step down by "
                   f"> {DER_SLACK})" + oracle,
                   der[-1] > der[0] and all(b >= a - DER_SLACK for a, b in zip(der, der[1:])),
                   "BAERASER DER " + ", ".join(f"{s}×{s}: {d:.4f}" for s, d in zip(sizes, der)))


def baselines_worsen_with_size(by_size: dict) -> dict:
    sizes = list(by_size)
    s0, s1 = sizes[0], sizes[-1]
    worse = {m: by_size[s1][m]["der"] < by_size[s0][m]["der"] for m in BASELINES}
    need = math.ceil(2 * len(worse) / 3)
    return verdict(f"the baselines get worse as the trigger grows (DER at {s1}×{s1} < at {s0}×{s0} for at least "
                   f"{need} of {len(worse)})",
                   sum(worse.values()) >= need,
                   "; ".join(f"{m}: " + ", ".join(f"{by_size[s][m]['der']:.3f}" for s in sizes) for m in worse))


# -- 4 · iterations -------------------------------------------------------------------------

def _lost(curve: list[dict]) -> list[float]:
    return [100 * (curve[0]["test_clean_acc"] - h["test_clean_acc"]) for h in curve]


def erased_without_forgetting(curve: list[dict], pool_ok: bool) -> dict:
    low = [(h, lo) for h, lo in zip(curve, _lost(curve)) if h["test_asr"] <= LOW_ASR]
    best = min(low, key=lambda p: p[1]) if low else None
    evidence = (f"least accuracy lost at ASR ≤ {100 * LOW_ASR:g}%: epoch {best[0]['epoch']:.2f}, ASR "
                f"{best[0]['test_asr']:.4f}, {best[1]:.2f} points lost" if best else
                f"lowest ASR on the curve {min(h['test_asr'] for h in curve):.4f}")
    return verdict(f"ASR reaches ≤ {100 * LOW_ASR:g}% while less than {FORGETTING_POINTS} points of accuracy are lost",
                   pool_ok and best is not None and best[1] < FORGETTING_POINTS, evidence)


def few_iterations_suffice(curve: list[dict], pool_ok: bool) -> dict:
    first = next((h for h in curve if h["test_asr"] <= LOW_ASR), None)
    return verdict(f"few iterations suffice: ASR ≤ {100 * LOW_ASR:g}% within the first epoch over D_h",
                   pool_ok and first is not None and first["epoch"] <= 1,
                   f"first ASR ≤ {100 * LOW_ASR:g}% at epoch {first['epoch']:.2f}" if first else "never within the run")


def lower_asr_costs_accuracy(curve: list[dict], pool_ok: bool) -> dict:
    import numpy as np

    corr = float(np.corrcoef([h["test_asr"] for h in curve], _lost(curve))[0, 1]) if len(curve) > 2 else float("nan")
    return verdict("lower ASR costs more accuracy (ASR and accuracy lost are negatively correlated along the run)",
                   pool_ok and corr < 0, f"Pearson r(ASR, points lost) = {corr:.3f} over {len(curve)} points")


# -- 5 · trigger position -------------------------------------------------------------------

def no_position_brings_it_back(positions: dict, pool_ok: bool) -> dict:
    before, after = positions["none"], positions["baeraser"]
    firing = [p for p in before if before[p] >= 0.5]
    return verdict(f"after BAERASER no trigger position brings the backdoor back (ASR ≤ {100 * POSITION_ASR:g}% at "
                   f"every position)",
                   pool_ok and all(a <= POSITION_ASR for a in after.values()),
                   "ASR before → after: " + "; ".join(f"{p}: {before[p]:.3f} → {after[p]:.3f}" for p in before)
                   + f" (the backdoor fired before at {len(firing)} of {len(before)} positions)")


# -- 6 · correct-label unlearning -----------------------------------------------------------

def _correct_evidence(correct: dict) -> str:
    return "; ".join(f"{k}: {r['acc_drop_points']:.2f} points lost" for k, r in correct.items())


def correct_labels_keep_accuracy(correct: dict, reference: str, ref_ratio: float, pool_ok: bool) -> dict:
    return verdict(f"unlearning towards correct labels leaves accuracy intact (at most {CORRECT_LABEL_POINTS} point "
                   f"lost at β/α = {ref_ratio:g})",
                   pool_ok and correct[reference]["acc_drop_points"] <= CORRECT_LABEL_POINTS, _correct_evidence(correct))


def penalty_protects_correct_memories(correct: dict, reference: str, stiff_run: str, ref_ratio: float, stiff: float,
                                      pool_ok: bool) -> dict:
    return verdict(f"the penalty protects correct memories (fewer points lost at β/α = {stiff:g} than at {ref_ratio:g})",
                   pool_ok and correct[stiff_run]["acc_drop_points"] < correct[reference]["acc_drop_points"],
                   _correct_evidence(correct))


# -- 7 · recovered triggers -----------------------------------------------------------------

def matched(row: dict) -> bool:
    """Mask form: most of the mask on the true patch; patch form: most pixels within tolerance."""
    if not row["found"] or row.get("size_differs"):
        return False
    return row.get("mask_share_on_true_patch", row.get("pixels_within_0.25", 0.0)) > MATCH_SHARE


def recovered_matches_true(recovered: dict, oracle: str = "") -> dict:
    def say(s, r):
        if not r["found"]:
            return f"{s}×{s}: target not recovered"
        if r.get("size_differs"):
            return f"{s}×{s}: recovered patch of another size"
        if "mask_share_on_true_patch" in r:
            return f"{s}×{s}: {100 * r['mask_share_on_true_patch']:.0f}% of the mask"
        return f"{s}×{s}: {100 * r['pixels_within_0.25']:.0f}% of pixels"

    return verdict(f"the recovered trigger matches the true one at every size (mask form: > {100 * MATCH_SHARE:g}% of "
                   f"the mask on the true patch; patch form: > {100 * MATCH_SHARE:g}% of pixels within "
                   f"{PIXEL_TOLERANCE})" + oracle,
                   all(matched(r) for r in recovered.values()), "; ".join(say(s, r) for s, r in recovered.items()))


# -- 8 · λ_H --------------------------------------------------------------------------------

def entropy_spreads_triggers(by_lambda: dict) -> dict:
    l0, l1 = min(by_lambda), max(by_lambda)
    a, b = by_lambda[l0], by_lambda[l1]
    return verdict(f"the entropy term spreads the recovered trigger (spread at λ_H = {l1:g} > at {l0:g})",
                   a["target_found"] and b["target_found"] and b["spread"] > a["spread"],
                   "spread " + ", ".join(f"λ_H {k:g}: {r['spread']:.4f}" if r["target_found"] else
                                         f"λ_H {k:g}: target lost" for k, r in by_lambda.items()))


def spread_costs_no_unlearning(by_lambda: dict, pool_ok: bool) -> dict:
    l0, l1 = min(by_lambda), max(by_lambda)
    return verdict(f"the spread costs no unlearning (BAERASER's DER at λ_H = {l1:g} ≥ at {l0:g} − {DER_SLACK})",
                   pool_ok and by_lambda[l1]["der"] >= by_lambda[l0]["der"] - DER_SLACK,
                   "DER " + ", ".join(f"λ_H {k:g}: {r['der']:.4f}" for k, r in by_lambda.items()))


# -- 9 · erased for good (issue #18; our claim, not the paper's) --------------------------------

def _retuned_evidence(retuned: dict, reference_after: float) -> str:
    return f"clean reference re-tuned {reference_after:.4f}; " + "; ".join(
        f"{k}: ASR {r['asr']:.4f}, re-tuned {r['asr_after']:.4f}" for k, r in retuned.items())


def default_stays_erased(retuned: dict, default: str, reference_after: float, pool_ok: bool) -> dict:
    """The default unlearning's model re-learns the backdoor no faster than a never-backdoored one."""
    bar = reference_after + REACTIVATION_MARGIN
    return verdict(f"the default unlearning stays erased (re-tuned ASR ≤ the clean reference's + "
                   f"{REACTIVATION_MARGIN:g} = {bar:.4f}) with ASR ≤ {LOW_ASR:g} right after the defense",
                   pool_ok and retuned[default]["asr_after"] <= bar and retuned[default]["asr"] <= LOW_ASR,
                   _retuned_evidence(retuned, reference_after))


def weight_anchor_relearns(retuned: dict, paper: str, reference_after: float, pool_ok: bool) -> dict:
    """The paper's reading (the weight penalty towards θ0) leaves the backdoor one re-tuning away."""
    return verdict(f"the paper's reading re-learns the backdoor (re-tuned ASR above the clean reference's + "
                   f"{REACTIVATION_MARGIN:g}): the weight penalty holds the backdoored weights near",
                   pool_ok and retuned[paper]["asr_after"] > reference_after + REACTIVATION_MARGIN,
                   _retuned_evidence(retuned, reference_after))
