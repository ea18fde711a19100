"""Does BAERASER's repair last? Unlearning settings against the reactivation check (issue #18).

    .venv/bin/python benchmarks/persistence.py             # after notebooks 01 and 02 at their defaults
    .venv/bin/python benchmarks/persistence.py --only "outputs anchor"

The default BadNets 3×3 victim, its cached pool (notebook 02) and the same D_h. Each setting
unlearns with the library's `unlearn`; the result is scored on the evaluation split (clean
accuracy, ASR) and re-tuned by the attacker of `baeraser_lib.reactivation` with three seeds
(three attacker sets and batch orders). The never-backdoored reference model and the undefended
victim get the same three re-tunings. The bar (issue #18): re-tuned ASR at most the reference's
+ 0.10, with ASR ≤ 0.02 and ≤ 2 points of accuracy lost right after the defense.

The settings were named before this script ran (from a development harness on the same victim):
- "weights anchor (the default)" is the default: the Fisher-weighted proximal penalty towards θ0;
- "no anchor": β = 0, the clean cross-entropy alone holds the clean task;
- "outputs anchor": β·KL(suspect ‖ θ) on clean D_h replaces the weight penalty;
- "outputs anchor, no early stop": the same, choosing among all 10 epochs (acc_tolerance 0 turns
  the early stop off; the choice is still the best validation DER).

Added after all four missed (found with the same harness, on the same victim; the default since):
- "outputs anchor + feature invariance (the default)": the outputs anchor, plus γ·‖φ(x ⊕ Δ) − φ(x)‖²
  pulling each stamped image's penultimate features onto its clean ones, all 10 epochs, the best
  validation DER returned.

Writes reports/benchmarks/persistence.json (merged by row name, so runs can be split).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from baeraser_lib.config import AttackConfig, TrainConfig
from baeraser_lib.data import load_experiment_data
from baeraser_lib.defenses.pool import obtain_pool
from baeraser_lib.defenses.recovery import RecoveryConfig
from baeraser_lib.defenses.unlearning import PAPER_UNLEARNING, UnlearnConfig, unlearn
from baeraser_lib.lab.claims import KEPT_POINTS, LOW_ASR, REACTIVATION_MARGIN as MARGIN
from baeraser_lib.lab.reports import REPO, write_json_atomic
from baeraser_lib.lab.schedule_study import SCHEDULE_BEFORE
from baeraser_lib.metrics import der, evaluate
from baeraser_lib.reactivation import ReactivationConfig, reactivation
from baeraser_lib.victims import find_model

SEEDS = (0, 1, 2)
PAPER = UnlearnConfig(**PAPER_UNLEARNING)  # the default until issue #18
SETTINGS = {
    "weights anchor (the paper's; the default before #18)": PAPER,
    "no anchor": dataclasses.replace(PAPER, beta=0.0),
    "outputs anchor": dataclasses.replace(PAPER, anchor="outputs"),
    "outputs anchor, no early stop": dataclasses.replace(PAPER, anchor="outputs", acc_tolerance=0.0),
    # issue #18's default as it was measured here: 10 epochs at a constant lr (the default since the
    # schedule study, 3 cosine epochs, is measured in benchmarks/unlearning_schedule.py)
    "outputs anchor + feature invariance (#18's default, 10 constant-lr epochs)": UnlearnConfig(**SCHEDULE_BEFORE),
}
OUT = REPO / "reports" / "benchmarks" / "persistence.json"


def retuned(model, data, victim) -> dict:
    """The attacker's re-tuning with each seed: ASR after, and its mean."""
    runs = [reactivation(model, data.train, data.evaluation, victim.trigger, victim.rule,
                         ReactivationConfig(seed=s), device="cpu")["asr_after"] for s in SEEDS]
    return {"asr_after": runs, "mean_asr_after": sum(runs) / len(runs)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(REPO / "data"))
    ap.add_argument("--artifacts", default=str(REPO / "artifacts"))
    ap.add_argument("--only", nargs="*", default=None, help="row names to run")
    args = ap.parse_args(argv)
    train, attack = TrainConfig(), AttackConfig()
    data = load_experiment_data(train.dataset, args.data)
    victim = find_model(args.artifacts, train, attack)
    reference = find_model(args.artifacts, train, None)
    holding_key = {"dataset": train.dataset, "holding_ratio": 0.05, "seed": 0, "n": len(data.holding)}
    pool, _, pool_path, _ = obtain_pool(victim.model, victim.path.name, data.holding, data.info.num_classes,
                                        RecoveryConfig(), args.artifacts, holding_key, progress=False)
    old = json.loads(OUT.read_text()) if OUT.exists() else {}
    rows = old.get("rows", {})
    before = evaluate(victim.model, data.evaluation, victim.trigger, victim.rule)
    ref = old.get("reference") or retuned(reference.model, data, victim)
    undefended = old.get("undefended") or retuned(victim.model, data, victim)

    def save():
        write_json_atomic(OUT, {"victim": victim.path.name, "pool": pool_path.name, "before": before,
                                "reactivation": dataclasses.asdict(ReactivationConfig()), "seeds": list(SEEDS),
                                "margin": MARGIN, "reference": ref, "undefended": undefended, "rows": rows})

    save()
    print("reference", ref, "undefended", undefended, flush=True)
    for name, cfg in SETTINGS.items():
        if args.only is not None and name not in args.only:
            continue
        torch.manual_seed(0)
        t0 = time.perf_counter()
        model, history = unlearn(victim.model, data.holding, pool, cfg, device="cpu", progress=False)
        seconds = time.perf_counter() - t0
        after = evaluate(model, data.evaluation, victim.trigger, victim.rule)
        drop = 100 * (before["clean_acc"] - after["clean_acc"])
        again = retuned(model, data, victim)
        rows[name] = {"config": repr(cfg), "clean_acc": after["clean_acc"], "asr": after["asr"],
                      "acc_drop_points": drop, "der": der(before["clean_acc"], after["clean_acc"], before["asr"],
                                                          after["asr"]),
                      "chosen_epoch": next(h["epoch"] for h in history if h.get("chosen")), "seconds": seconds,
                      **again, "stays_erased": again["mean_asr_after"] <= ref["mean_asr_after"] + MARGIN,
                      "bars_met": after["asr"] <= LOW_ASR and drop <= KEPT_POINTS}
        print(name, json.dumps({k: v for k, v in rows[name].items() if k != "config"}), flush=True)
        save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
