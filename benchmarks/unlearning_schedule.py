"""A cheaper unlearning schedule for BAERASER, chosen on development victims outside the families grid (issue #18).

    .venv/bin/python benchmarks/unlearning_schedule.py develop                    # the study: writes the choice
    .venv/bin/python benchmarks/unlearning_schedule.py families [--only wanet]    # the choice on every families row

Issue #18's bars: ASR ≤ 0.02, ≤ 2 points of clean accuracy lost, recovery + unlearning ≤ 25% of the
victim's training time, and the backdoor stays erased (re-tuned ASR ≤ the never-backdoored model's
+ 0.10). #18's first default ran 10 epochs at a constant lr and missed the cost bar wherever it
unlearned (`unlearning_budget.py`); cutting its epochs lost accuracy, because the first epoch's
ascent costs 3 to 19 points and the later ones win them back.

**The question.** Does a cosine decay of the same lr (0.01 → 0 over the run) settle the accuracy
within fewer epochs? Cosine annealing is the textbook schedule for a short run; nothing else changes.

Fixed before any candidate ran (`baeraser_lib/lab/schedule_study.py`):
* **Development victims** (`DEV_VICTIMS`): the families recipe (Fashion-MNIST, ResNet-18 width
  16, 4 epochs, the same D_h) with triggers, places, target labels and attack seeds that no
  families row has. The families rows, where the default is scored, take no part in the choice.
  Each victim's pool is recovered with the default recovery (cached like notebook 02's). A victim
  whose pool is empty (judged clean) has no say.
* **Candidates** (`CANDIDATES`): cosine over 2, 3, 4 and 5 epochs, and #18's 10 constant-lr epochs.
  The constant schedule cut after k epochs is scored too, from the same 10-epoch run (its first
  k epochs are a k-epoch run; its seconds prorated), for comparison only.
* **The rule** (`choose`): the fewest epochs that meet all four bars on every development victim;
  if none does, the most (victim, bar) pairs met, ties going to fewer epochs. Cost ratios here are
  timed on this machine, alone: the victim's training, the recovery and the unlearning (not the
  scoring, which is evaluation).

The study chose cosine over 3 epochs, the default since (`UnlearnConfig`).

`families` then runs the chosen setting on every families row (its cached victim and pool, the
same D_h), scores it as `unlearning_budget.py` does, and puts the grid's default beside it. Its
cost ratio is in the sweep's own timing: a cosine epoch does the same work as a constant one, so E
epochs cost what the first E epochs of the 10-epoch run cost there (`unlearning_budget.json`'s
`cost_ratio` at budget E); `cost_ratio_here` is this run's timing over the sweep's training seconds.

The true trigger is read for scoring only, after unlearning has run. Writes
reports/benchmarks/unlearning_schedule.json (merged per victim and row, so runs resume).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time

import torch

from baeraser_lib.config import TrainConfig
from baeraser_lib.data import load_experiment_data
from baeraser_lib.defenses import RecoveryConfig, UnlearnConfig
from baeraser_lib.defenses.pool import obtain_pool
from baeraser_lib.defenses.unlearning import best_epoch, unlearn
from baeraser_lib.lab.families_rows import FAMILIES, finished_rows, row_victim_and_pool, rows_data
from baeraser_lib.lab.reports import REPO, write_json_atomic
from baeraser_lib.lab.schedule_study import BASE, CANDIDATES, DEV_VICTIMS, bars, choose
from baeraser_lib.metrics import evaluate
from baeraser_lib.params import reactivation_config, unlearn_config
from baeraser_lib.reactivation import ReactivationConfig, reactivation
from baeraser_lib.victims import obtain_model

OUT = REPO / "reports" / "benchmarks" / "unlearning_schedule.json"
BUDGET = REPO / "reports" / "benchmarks" / "unlearning_budget.json"

TRAIN = TrainConfig()  # the families recipe: every field at its default
HOLDING = {"dataset": TRAIN.dataset, "holding_ratio": 0.05, "seed": 0}


def scorer(victim, data, before: dict, react_cfg: ReactivationConfig):
    """score(model) → ASR, accuracy, points lost and re-tuned ASR on the evaluation split (true trigger)."""
    def score(model) -> dict:
        ev = evaluate(model, data.evaluation, victim.trigger, victim.rule)
        re = reactivation(model, data.train, data.evaluation, victim.trigger, victim.rule, react_cfg, device="cpu",
                          before=ev)
        return {"asr": ev["asr"], "clean_acc": ev["clean_acc"],
                "acc_drop_points": 100 * (before["clean_acc"] - ev["clean_acc"]), "reactivated_asr": re["asr_after"]}
    return score


def timed_unlearn(model, holding, pool, cfg: UnlearnConfig, keep_epochs: bool = False):
    """(returned model, history, seconds of the defense alone, {epoch: state} when `keep_epochs`)."""
    states, mine = {}, [0.0]

    def keep(m, epoch):
        t = time.perf_counter()
        states[int(epoch)] = copy.deepcopy(m.state_dict())
        mine[0] += time.perf_counter() - t

    start = time.perf_counter()
    out, history = unlearn(model, holding, pool, cfg, device="cpu", progress=False,
                           on_epoch=keep if keep_epochs else None)
    return out, history, time.perf_counter() - start - mine[0], states


def development_row(attack, data, artifacts: str):
    """A development victim (trained or cached), its pool (recovered or cached) and the row every
    study starts from: before-figures, the never-backdoored model's re-tuned ASR, timings. Returns
    (victim, pool, row, score): `score(model)` as `scorer` gives it."""
    victim = obtain_model(TRAIN, attack, data, artifacts, device="cpu", progress=False)
    clean = obtain_model(TRAIN, None, data, artifacts, device="cpu", progress=False)
    pool, meta, pool_path, _ = obtain_pool(victim.model, victim.path.name, data.holding, data.info.num_classes,
                                           RecoveryConfig(), artifacts, {**HOLDING, "n": len(data.holding)},
                                           progress=False)
    react_cfg = ReactivationConfig()
    before = evaluate(victim.model, data.evaluation, victim.trigger, victim.rule)
    reference = reactivation(clean.model, data.train, data.evaluation, victim.trigger, victim.rule, react_cfg,
                             device="cpu")["asr_after"]
    row = {"attack": repr(attack), "victim": victim.path.name, "pool": pool_path.name, "pool_labels": list(pool.labels),
           "train_seconds": victim.train_seconds, "recovery_seconds": meta["seconds_recovery"], "before": before,
           "reference_reactivated_asr": reference, "candidates": {}}
    if len(pool) == 0:
        row["note"] = "empty pool: recovery judged the victim clean; no candidate runs"
    return victim, pool, row, scorer(victim, data, before, react_cfg)


def develop(name: str, data, artifacts: str) -> dict:
    victim, pool, row, score = development_row(DEV_VICTIMS[name], data, artifacts)
    row["constant_cut"] = {}
    reference = row["reference_reactivated_asr"]
    if len(pool) == 0:
        return row

    def figures(model, seconds: float) -> dict:
        fig = {**score(model), "unlearn_seconds": seconds,
               "cost_ratio": (row["recovery_seconds"] + seconds) / row["train_seconds"]}
        return {**fig, "bars": bars(fig, reference)}

    for cname, cfg in CANDIDATES.items():
        model, history, seconds, states = timed_unlearn(victim.model, data.holding, pool, cfg,
                                                        keep_epochs=cfg == BASE)
        row["candidates"][cname] = {**figures(model, seconds), "chosen_epoch": best_epoch(history)}
        print(name, cname, json.dumps({k: round(v, 4) for k, v in row["candidates"][cname].items()
                                       if isinstance(v, float)}), flush=True)
        if cfg == BASE:  # the constant schedule cut after k epochs (comparison only; seconds prorated)
            for k in (2, 3, 4, 5):
                e = best_epoch(history, last=k)
                m = copy.deepcopy(victim.model)
                m.load_state_dict(states[e])
                row["constant_cut"][str(k)] = {**figures(m.eval(), seconds * k / cfg.epochs), "chosen_epoch": e}
    return row


def unlearn_and_score(victim, data, pool, cfg: UnlearnConfig, params: dict, before: dict) -> dict:
    """A families row's victim unlearned with `cfg` (timed alone), then scored with the row's own
    re-tuning settings: ASR, accuracy, points lost, re-tuned ASR, seconds and the epoch returned."""
    model, history, seconds, _ = timed_unlearn(victim.model, data.holding, pool, cfg)
    return {**scorer(victim, data, before, reactivation_config(params))(model), "unlearn_seconds": seconds,
            "chosen_epoch": best_epoch(history)}


def families_row(name: str, params: dict, data, artifacts: str, cfg: UnlearnConfig, budget: dict) -> dict:
    victim, pool, meta, _, _ = row_victim_and_pool(params, data, artifacts)
    nb03 = json.loads((FAMILIES / name / "03_unlearn.json").read_text())
    reference = nb03["reactivation"]["models"]["clean reference"]["asr_after"]
    grid = {k: nb03["methods"]["baeraser"][k] for k in ("asr", "clean_acc", "reactivated_asr")}
    row = {"victim": victim.path.name, "train_seconds": victim.train_seconds,
           "recovery_seconds": meta["seconds_recovery"], "reference_reactivated_asr": reference,
           "grid_default": {**grid, "cost_ratio": nb03["cost_ratio"], "acc_drop_points": nb03["baeraser_acc_drop_points"]}}
    before = evaluate(victim.model, data.evaluation, victim.trigger, victim.rule)
    if len(pool) == 0:
        fig = {"asr": before["asr"], "clean_acc": before["clean_acc"], "acc_drop_points": 0.0,
               "reactivated_asr": nb03["reactivation"]["models"]["none"]["asr_after"], "unlearn_seconds": 0.0,
               "cost_ratio": row["recovery_seconds"] / row["train_seconds"]}
        fig["cost_ratio_here"] = fig["cost_ratio"]
        return {**row, "note": "empty pool: the model is judged clean and left alone", "chosen": fig,
                "bars": bars(fig, reference)}
    fig = unlearn_and_score(victim, data, pool, cfg, params, before)
    fig = {**fig, "cost_ratio_here": (row["recovery_seconds"] + fig["unlearn_seconds"]) / row["train_seconds"],
           "cost_ratio": budget["rows"][name]["budgets"][str(cfg.epochs)]["cost_ratio"]}
    return {**row, "chosen": fig, "bars": bars(fig, reference)}


def study_arguments(description: str, argv=None) -> argparse.Namespace:
    """A study's command line: its step (develop, then families), the data and artifacts roots, and
    the development victims or families rows to run (all by default)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("step", choices=("develop", "families"))
    ap.add_argument("--data", default=str(REPO / "data"))
    ap.add_argument("--artifacts", default=str(REPO / "artifacts"))
    ap.add_argument("--only", nargs="*", default=None, help="development victims (develop) or rows (families) to run")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = study_arguments(__doc__.split("\n")[0], argv)
    torch.manual_seed(0)
    doc = json.loads(OUT.read_text()) if OUT.exists() else {}
    if args.step == "develop":
        unknown = sorted(set(args.only or []) - set(DEV_VICTIMS))
        if unknown:
            raise SystemExit(f"unknown development victims {unknown}; choose from {sorted(DEV_VICTIMS)}")
        data = load_experiment_data(TRAIN.dataset, args.data, holding_ratio=HOLDING["holding_ratio"],
                                    seed=HOLDING["seed"])
        victims = doc.get("development", {})
        for name in args.only or DEV_VICTIMS:
            victims[name] = develop(name, data, args.artifacts)
            doc = {**doc, "development": victims, "candidates": {k: repr(v) for k, v in CANDIDATES.items()},
                   "chosen": choose(victims) if set(victims) == set(DEV_VICTIMS) else None}
            write_json_atomic(OUT, doc)
        return 0
    if not doc.get("chosen"):
        raise SystemExit("run the development study first (step `develop` on every development victim)")
    todo = finished_rows(args.only)
    data = rows_data(todo, args.data)
    budget = json.loads(BUDGET.read_text())
    cfg = CANDIDATES[doc["chosen"]]
    rows = doc.get("families", {})
    for name, params in todo.items():
        if dataclasses.replace(unlearn_config(params), schedule=cfg.schedule, epochs=cfg.epochs,
                               path_rho=cfg.path_rho) != cfg:
            raise SystemExit(f"row {name} sets unlearning parameters of its own; this study runs the defaults only")
        rows[name] = families_row(name, params, data, args.artifacts, cfg, budget)
        print(name, json.dumps({k: round(v, 4) for k, v in rows[name]["chosen"].items() if isinstance(v, float)}),
              flush=True)
        write_json_atomic(OUT, {**doc, "families_config": repr(cfg), "families": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
