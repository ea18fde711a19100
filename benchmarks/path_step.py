"""A path-aware unlearning step, measured on development victims outside the families grid (issue #18).

    .venv/bin/python benchmarks/path_step.py develop [--only dev_wanet_t3 ...]   # the study: writes the choice
    .venv/bin/python benchmarks/path_step.py families [--only wanet ...]         # the choice on every families row

After the schedule study, the default still let two families rows re-learn their backdoor when
re-tuned (WaNet and all-to-all BadNets): the recovered trigger erased the ASR, but the true
trigger's features stayed one short step away. `UnlearnConfig.path_rho = ρ` takes each step's
loss at θ + ρ·(θ − θ0), a step further along the path from the suspect θ0 through the current θ,
and applies its gradient at θ (the idea of Min et al.'s Path-Aware Minimization, NeurIPS 2024, in
a simplified form). The solution must then stay good beyond itself, away from the backdoored basin.

Fixed before any candidate ran (`baeraser_lib/lab/path_study.py`):
* **Development victims** (`DEV_VICTIMS`): the schedule study's, plus a WaNet victim (target 3)
  and an all-to-all BadNets victim (4×4 at [3, 3]); no families row's trigger, place, target or seed.
* **Candidates** (`CANDIDATES`): the default (ρ = 0) and ρ = 0.5, 1, 2, all else the default.
* **The rule** (`choose`): the most (victim, bar) pairs met over #18's four bars (ASR ≤ 0.02, ≤ 2
  points lost, cost ≤ 25% of training, re-tuned ASR ≤ the never-backdoored model's + 0.10); the
  default wins ties. A change becomes the default only if the rule picks it.

`families` runs the chosen candidate on every families row (its cached victim and pool, the same
D_h) and scores it as the schedule study does, the schedule study's figures for the default beside
it. Its cost ratio is timed here, alone: (the sweep's recovery seconds + this run's unlearning
seconds) / the sweep's training seconds.

The true trigger is read for scoring only, after unlearning has run. Writes
reports/benchmarks/path_step.json (merged per victim, so runs resume).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import torch

from baeraser_lib.data import load_experiment_data
from baeraser_lib.defenses import UnlearnConfig
from baeraser_lib.defenses.unlearning import best_epoch
from baeraser_lib.lab import path_study
from baeraser_lib.lab.families_rows import FAMILIES, finished_rows, row_victim_and_pool, rows_data
from baeraser_lib.lab.reports import REPO, write_json_atomic
from baeraser_lib.lab.schedule_study import bars
from baeraser_lib.metrics import evaluate
from baeraser_lib.params import unlearn_config
from unlearning_schedule import TRAIN, HOLDING, development_row, study_arguments, timed_unlearn, unlearn_and_score  # benchmarks/ is on sys.path as a script


@dataclasses.dataclass(frozen=True)
class Study:
    """One study: where it writes, its fixed parts, and where the default's families figures
    before it come from (a JSON whose `families[row]` has `chosen` and `bars`)."""
    out: Path
    victims: dict
    candidates: dict
    choose: Callable[[dict], str]
    before: Path


PATH_STEP = Study(REPO / "reports" / "benchmarks" / "path_step.json", path_study.DEV_VICTIMS, path_study.CANDIDATES,
                  path_study.choose, REPO / "reports" / "benchmarks" / "unlearning_schedule.json")


def develop(study: Study, name: str, data, artifacts: str) -> dict:
    victim, pool, row, score = development_row(study.victims[name], data, artifacts)
    if len(pool) == 0:
        return row
    reference = row["reference_reactivated_asr"]
    for cname, cfg in study.candidates.items():
        model, history, seconds, _ = timed_unlearn(victim.model, data.holding, pool, cfg)
        fig = {**score(model), "unlearn_seconds": seconds, "chosen_epoch": best_epoch(history),
               "cost_ratio": (row["recovery_seconds"] + seconds) / row["train_seconds"]}
        row["candidates"][cname] = {**fig, "bars": bars(fig, reference)}
        print(name, cname, json.dumps({k: round(v, 4) for k, v in fig.items() if isinstance(v, float)}),
              [b for b, ok in row["candidates"][cname]["bars"].items() if not ok], flush=True)
    return row


def families_row(name: str, params: dict, data, artifacts: str, cfg, before_rows: dict) -> dict:
    victim, pool, meta, _, _ = row_victim_and_pool(params, data, artifacts)
    nb03 = json.loads((FAMILIES / name / "03_unlearn.json").read_text())
    reference = nb03["reactivation"]["models"]["clean reference"]["asr_after"]
    before_default = before_rows[name]
    row = {"victim": victim.path.name, "train_seconds": victim.train_seconds,
           "recovery_seconds": meta["seconds_recovery"], "reference_reactivated_asr": reference,
           "default": {**before_default["chosen"], "bars": before_default["bars"]}}
    if len(pool) == 0:
        return {**row, "note": "empty pool: the model is judged clean and left alone",
                "chosen": row["default"], "bars": row["default"]["bars"]}
    before = evaluate(victim.model, data.evaluation, victim.trigger, victim.rule)
    fig = unlearn_and_score(victim, data, pool, cfg, params, before)
    fig["cost_ratio"] = (row["recovery_seconds"] + fig["unlearn_seconds"]) / row["train_seconds"]
    return {**row, "chosen": fig, "bars": bars(fig, reference)}


def run(study: Study, description: str, argv=None) -> int:
    """`develop` (the study, writing its choice) or `families` (the choice on every families row)."""
    args = study_arguments(description, argv)
    torch.manual_seed(0)
    doc = json.loads(study.out.read_text()) if study.out.exists() else {}
    if args.step == "families":
        if not doc.get("chosen"):
            raise SystemExit("run the development study first (step `develop` on every development victim)")
        if doc["chosen"] == "default":
            raise SystemExit("the study kept the default: the earlier study's families figures are its own")
        todo = finished_rows(args.only)
        data = rows_data(todo, args.data)
        cfg = study.candidates[doc["chosen"]]
        before_rows = json.loads(study.before.read_text())["families"]
        rows = doc.get("families", {})
        for name, params in todo.items():
            if unlearn_config(params) != UnlearnConfig():
                raise SystemExit(f"row {name} sets unlearning parameters of its own; this study runs the defaults only")
            rows[name] = families_row(name, params, data, args.artifacts, cfg, before_rows)
            print(name, json.dumps({k: round(v, 4) for k, v in rows[name]["chosen"].items() if isinstance(v, float)}),
                  flush=True)
            write_json_atomic(study.out, {**doc, "families_config": repr(cfg), "families": rows})
        return 0
    unknown = sorted(set(args.only or []) - set(study.victims))
    if unknown:
        raise SystemExit(f"unknown development victims {unknown}; choose from {sorted(study.victims)}")
    data = load_experiment_data(TRAIN.dataset, args.data, holding_ratio=HOLDING["holding_ratio"], seed=HOLDING["seed"])
    victims = doc.get("development", {})
    for name in args.only or study.victims:
        victims[name] = develop(study, name, data, args.artifacts)
        doc = {**doc, "candidates": {k: repr(v) for k, v in study.candidates.items()}, "development": victims,
               "chosen": study.choose(victims) if set(victims) == set(study.victims) else None}
        write_json_atomic(study.out, doc)
    print(study.out, "chosen:", doc["chosen"])
    return 0


if __name__ == "__main__":
    raise SystemExit(run(PATH_STEP, __doc__.split("\n")[0]))
