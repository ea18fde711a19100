"""How many unlearning epochs does BAERASER need? Its cost against its figures, per families victim (issue #18).

    .venv/bin/python benchmarks/unlearning_budget.py                    # after `make sweep GRID=grids/families.yaml`
    .venv/bin/python benchmarks/unlearning_budget.py --only wanet imc   # some rows only (rows are merged)

Issue #18 asks BAERASER to keep its figures (ASR ≤ 0.02, ≤ 2 points lost, recovery + unlearning
≤ 25% of the victim's training time) while erasing for good. #18's first default, which the
families grid ran, runs all 10 epochs at a constant lr and returns the one with the best
validation DER; that costs more than 25% on every row where it unlearned (the grid's
`cost_ratio`). This measures what a shorter budget of that schedule would give (`budget_config`
pins it, whatever today's default), without changing the default. The default was since chosen
elsewhere (`unlearning_schedule.py`).

For every row of the families grid (`reports/families/<row>/run.json`), with the row's victim and
pool (notebooks 01 and 02: cached, or trained and recovered again with the same configs and seeds
where the cache lost them, which the row records) and the same D_h: one run of the default unlearning, 10
epochs. The same seed draws the same batches whatever the epoch count, so the first k epochs of
that run *are* a k-epoch run, and `unlearning.best_epoch(history, last=k)` names the model a
k-epoch budget returns. Each such model is scored on the evaluation split with the true trigger,
and re-tuned by the attacker of `baeraser_lib.reactivation` (its defaults, notebook 03's). The
row's never-backdoored reference figure (the re-tuned reference's ASR) comes from the row's
committed `03_unlearn.json` (the same configs and seeds, not re-run here), and the recovery
seconds from the pool's own record (notebook 02's figure when the pool was cached).

Cost ratio for budget k = (recovery seconds + unlearning seconds for k epochs) / the victim's
training seconds, all three in the sweep's own timing: the row's recovery and training seconds,
and its 10-epoch unlearning seconds (notebook 03) times the share of the 10 epochs' time that the
first k took here (timed alone on the same 2-core machine, whose speed drifts between runs:
`reproduces_grid.seconds_ratio` records this run's 10 epochs over the sweep's, and
`cost_ratio_here` the unscaled cost). At k = 10 the cost is the
grid's own. A row whose victim the cache had lost is trained again here, and all its seconds are
this run's (no scaling). The run at k = 10 must reproduce the grid's BAERASER figures (checked per
row; a victim trained again need not be the same model, and its row says so).
`--rescore` recomputes costs and bars from the JSON without running anything.

Nothing here changes a default, and nothing in it reaches a defense: the true trigger is read for
scoring only, after unlearning has run.

Writes reports/benchmarks/unlearning_budget.json (merged by row, so runs can be split and resumed).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time

from baeraser_lib.defenses.unlearning import best_epoch, unlearn
from baeraser_lib.lab.claims import COST_SHARE, KEPT_POINTS, LOW_ASR, REACTIVATION_MARGIN
from baeraser_lib.lab.families_rows import FAMILIES, finished_rows, row_victim_and_pool, rows_data
from baeraser_lib.lab.reports import REPO, write_json_atomic
from baeraser_lib.lab.schedule_study import SCHEDULE_BEFORE
from baeraser_lib.lab.site import budget_summary
from baeraser_lib.metrics import evaluate
from baeraser_lib.params import attack_config, reactivation_config, train_config, unlearn_config
from baeraser_lib.reactivation import reactivation
from baeraser_lib.victims import model_path

OUT = REPO / "reports" / "benchmarks" / "unlearning_budget.json"
BARS = {"asr": LOW_ASR, "acc_drop_points": float(KEPT_POINTS), "cost_ratio": COST_SHARE,
        "reactivation_margin": REACTIVATION_MARGIN}


def budget_config(params: dict):
    """The row's unlearning at the schedule the grid ran (10 epochs, constant lr): only at a constant
    lr is a run's first k epochs a k-epoch run."""
    return dataclasses.replace(unlearn_config(params), **SCHEDULE_BEFORE)


def budget_rows(history: list[dict], epochs: int, spent: dict[int, float], total: float, score) -> dict[str, dict]:
    """Per budget k (1 … `epochs`): the epoch a k-epoch run returns, its seconds, and `score(epoch)`'s
    figures (called once per distinct epoch). A run that stopped early (an epoch diverged) stops
    there under every longer budget too: those budgets cost `total`."""
    return {str(k): {"chosen_epoch": (e := best_epoch(history, last=k)), "unlearn_seconds": spent.get(k, total),
                     **score(e)} for k in range(1, epochs + 1)}


def judged(b: dict, reference: float) -> dict:
    """The budget's figures with its four bars (issue #18's)."""
    return {**b, "bars": {"asr": b["asr"] <= LOW_ASR, "acc_drop_points": b["acc_drop_points"] <= KEPT_POINTS,
                          "cost_ratio": b["cost_ratio"] <= COST_SHARE,
                          "stays_erased": b["reactivated_asr"] <= reference + REACTIVATION_MARGIN}}


def costed(row: dict) -> dict:
    """The row with each budget's cost ratios (see the module text) and its four bars."""
    budgets, longest = row["budgets"], str(max(int(k) for k in row["budgets"]))
    here = budgets[longest]["unlearn_seconds"]
    retrained = row.get("victim_was_cached") is False  # its training and recovery were timed here: no scaling
    scale = row["grid_baeraser"]["seconds"] / here if here > 0 and not retrained else 1.0  # sweep s per s here
    out = {}
    for k, b in budgets.items():
        b = {key: v for key, v in b.items() if key != "bars"}
        b["cost_ratio_here"] = (row["recovery_seconds"] + b["unlearn_seconds"]) / row["train_seconds"]
        b["cost_ratio"] = (row["recovery_seconds"] + scale * b["unlearn_seconds"]) / row["train_seconds"]
        out[k] = judged(b, row["reference_reactivated_asr"])
    return {**row, "budgets": out}


def run_row(name: str, params: dict, data, artifacts: str) -> dict:
    cached_victim = model_path(artifacts, train_config(params), attack_config(params)).exists()
    victim, pool, meta, pool_path, cached = row_victim_and_pool(params, data, artifacts)
    nb03 = json.loads((FAMILIES / name / "03_unlearn.json").read_text())
    recovery_seconds = meta["seconds_recovery"]  # the sweep's own recovery when cached (notebook 02's figure)
    reference = nb03["reactivation"]["models"]["clean reference"]["asr_after"]
    cfg, react_cfg = budget_config(params), reactivation_config(params)
    before = evaluate(victim.model, data.evaluation, victim.trigger, victim.rule)
    row = {"victim": victim.path.name, "victim_was_cached": cached_victim, "pool": pool_path.name,
           "pool_labels": list(pool.labels), "pool_was_cached": cached, "train_seconds": victim.train_seconds,
           "recovery_seconds": recovery_seconds, "before": before, "reference_reactivated_asr": reference,
           "grid_baeraser": nb03["methods"]["baeraser"], "budgets": {}}
    if len(pool) == 0:  # nothing to unlearn: every budget returns the suspect, at the cost of recovery only
        row["note"] = "empty pool: the model is judged clean and left alone, whatever the budget"
        same = {"chosen_epoch": 0, "unlearn_seconds": 0.0, "asr": before["asr"], "clean_acc": before["clean_acc"],
                "acc_drop_points": 0.0, "reactivated_asr": nb03["reactivation"]["models"]["none"]["asr_after"]}
        row["budgets"] = {str(k): same for k in range(1, cfg.epochs + 1)}
        return costed(row)

    states, stamps, mine = {}, {}, [0.0]

    def keep(model, epoch):  # snapshot each epoch; the time it takes is unlearn's "overhead", not the defense's
        t = time.perf_counter()
        stamps[int(epoch)] = t - start - mine[0]
        states[int(epoch)] = copy.deepcopy(model.state_dict())
        mine[0] += time.perf_counter() - t

    start = time.perf_counter()
    _, history = unlearn(victim.model, data.holding, pool, cfg, device="cpu", progress=False, on_epoch=keep)
    total = time.perf_counter() - start - mine[0]
    scored: dict[int, dict] = {}

    def score(epoch: int) -> dict:
        if epoch not in scored:
            m = copy.deepcopy(victim.model)
            m.load_state_dict(states[epoch])
            m.eval()
            ev = evaluate(m, data.evaluation, victim.trigger, victim.rule)
            re = reactivation(m, data.train, data.evaluation, victim.trigger, victim.rule, react_cfg, device="cpu",
                              before=ev)
            drop = 100 * (before["clean_acc"] - ev["clean_acc"])
            scored[epoch] = {"asr": ev["asr"], "clean_acc": ev["clean_acc"], "acc_drop_points": drop,
                             "reactivated_asr": re["asr_after"]}
        return scored[epoch]

    spent = {k: stamps[k] for k in stamps if k > 0}
    row = costed({**row, "budgets": budget_rows(history, cfg.epochs, spent, total, score)})
    full, grid = row["budgets"][str(cfg.epochs)], nb03["methods"]["baeraser"]
    row["reproduces_grid"] = {  # the full budget is the default the grid ran: the same model, or something changed
        **{k: abs(full[k] - grid[k]) < 1e-6 for k in ("asr", "clean_acc", "reactivated_asr")},
        "chosen_epoch": full["chosen_epoch"] == nb03.get("baeraser_chosen_epoch")
        == next(h["epoch"] for h in history if h.get("chosen")),
        "seconds_ratio": full["unlearn_seconds"] / grid["seconds"]}  # notebook 03's: unlearning alone
    row["val_history"] = [{k: h[k] for k in ("epoch", "val_acc", "val_recovered_asr", "val_der") if k in h}
                          for h in history if not h.get("trace")]
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(REPO / "data"))
    ap.add_argument("--artifacts", default=str(REPO / "artifacts"))
    ap.add_argument("--only", nargs="*", default=None, help="row names to run")
    ap.add_argument("--rescore", action="store_true", help="recompute costs and bars from the JSON, run nothing")
    args = ap.parse_args(argv)
    if args.rescore:
        doc = json.loads(OUT.read_text())
        doc["rows"] = {k: costed(r) for k, r in doc["rows"].items()}
        write_json_atomic(OUT, {**doc, "bars": BARS, "summary": budget_summary(doc["rows"])})
        return 0
    todo = finished_rows(args.only)
    data = rows_data(todo, args.data)
    old = json.loads(OUT.read_text()) if OUT.exists() else {}
    rows = old.get("rows", {})
    for name, params in todo.items():
        t0 = time.perf_counter()
        rows[name] = {**run_row(name, params, data, args.artifacts), "wall_seconds": time.perf_counter() - t0}
        b = rows[name]["budgets"]
        print(name, json.dumps({k: {m: round(v[m], 4) for m in ("asr", "acc_drop_points", "reactivated_asr",
                                                                "cost_ratio")} for k, v in b.items()}), flush=True)
        write_json_atomic(OUT, {"bars": BARS, "unlearn_config": repr(budget_config(params)),
                                "reactivation_config": repr(reactivation_config(params)), "rows": rows,
                                "summary": budget_summary(rows)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
