"""The cost bar in image passes, which do not move with the machine (issue #18).

    .venv/bin/python benchmarks/work_ratio.py [--only wanet ...]   # every finished families row by default

#18's cost bar is recovery + unlearning ≤ 25% of the victim's training time, in seconds, and
seconds move with the machine: the same unlearning of the same row took 0.94 to 2.33 times as
long from one session to the next (README, *The cost ratio moves with the machine*). This runs
each row's recovery (notebook 02's, into a scratch folder, so nothing cached is reused) and
BAERASER's unlearning (notebook 03's default) again on the row's cached victim and D_h, counts the
images through the victim's network (`baeraser_lib.passes`), and divides by the victim's
training passes (every training image forward and backward once per epoch). The attack's own
trigger optimisation (TrojanNN, IMC) and the victim's evaluations are not counted in training, so
the ratio errs high. It also checks that this recovery kept the labels the grid's did, and that
this unlearning's model has the grid's ASR on the evaluation split (`same_model_as_grid`: the ASR
only, to every digit; accuracy and re-tuned ASR are not compared here).

Writes reports/benchmarks/work_ratio.json (merged per row, so runs resume).
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch

from baeraser_lib.defenses.pool import obtain_pool
from baeraser_lib.defenses.unlearning import unlearn_or_keep
from baeraser_lib.lab.families_rows import FAMILIES, finished_rows, row_victim_and_pool, rows_data
from baeraser_lib.lab.grid_report import TABLE_NOTEBOOK
from baeraser_lib.lab.reports import REPO, write_json_atomic
from baeraser_lib.lab.timing_report import SAME
from baeraser_lib.metrics import evaluate
from baeraser_lib.params import recovery_config, unlearn_config
from baeraser_lib.passes import COST, counting_passes, training_work, work

OUT = REPO / "reports" / "benchmarks" / "work_ratio.json"


def row_work(name: str, params: dict, data, artifacts: str) -> dict:
    victim, cached_pool, cached_meta, _, _ = row_victim_and_pool(params, data, artifacts)
    network = type(victim.model)
    holding_key = {"dataset": params["dataset"], "holding_ratio": params["holding_ratio"], "seed": params["seed"],
                   "n": len(data.holding)}
    with tempfile.TemporaryDirectory() as scratch, counting_passes(network) as rec:
        pool, meta, _, cached = obtain_pool(victim.model, victim.path.name, data.holding, data.info.num_classes,
                                            recovery_config(params), scratch, holding_key, progress=False)
    assert not cached
    with counting_passes(network) as unl:
        model, _ = unlearn_or_keep(victim.model, data.holding, pool, unlearn_config(params), device="cpu",
                                   progress=False)
    nb03 = json.loads((FAMILIES / name / f"{TABLE_NOTEBOOK}.json").read_text())
    ev = evaluate(model, data.evaluation, victim.trigger, victim.rule)
    epochs, n_train = victim.meta["train_config"]["epochs"], victim.meta["n_train"]
    train = training_work(n_train, epochs)
    return {"victim": victim.path.name, "n_train": n_train, "epochs": epochs, "training_work": train,
            "recovery_passes": dict(rec), "unlearning_passes": dict(unl),
            "recovery_work": work(rec), "unlearning_work": work(unl),
            "work_ratio": (work(rec) + work(unl)) / train,
            "seconds_cost_ratio_in_grid": nb03["cost_ratio"],
            "same_pool_labels": list(meta["labels_kept"]) == list(cached_meta["labels_kept"]),
            "labels_kept": list(meta["labels_kept"]),
            "same_model_as_grid": abs(ev["asr"] - nb03["methods"]["baeraser"]["asr"]) < SAME}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(REPO / "data"))
    ap.add_argument("--artifacts", default=str(REPO / "artifacts"))
    ap.add_argument("--only", nargs="*", default=None, help="families rows to run (all by default)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    todo = finished_rows(args.only)
    data = rows_data(todo, args.data)
    doc = json.loads(OUT.read_text()) if OUT.exists() else {}
    rows = doc.get("rows", {})
    for name, params in todo.items():
        rows[name] = row_work(name, params, data, args.artifacts)
        print(name, json.dumps({k: v for k, v in rows[name].items() if not isinstance(v, dict)}), flush=True)
        write_json_atomic(OUT, {"cost_per_image": COST, "rows": dict(sorted(rows.items()))})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
