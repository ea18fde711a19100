"""One default defense on every victim of the families grid and on clean models (issue #14).

    .venv/bin/python benchmarks/trigger_agnostic.py            # after `make sweep GRID=grids/families.yaml`

For each backdoored victim of `grids/families.yaml` (loaded from the artifact cache, trained if
missing) and for clean models of three seeds, run what a defender runs, with the library's
defaults and nothing else: `recover_triggers(model, D_h, K)` (mask search, detection, staircase),
then `unlearn_or_keep` (unlearning when a label was flagged, the model left alone otherwise).
Only then, on the evaluation split and with the true trigger, score the result.

Every row carries the same `defense_config`. Rows are written as they finish and reused on a
rerun when the defense config and the victim are unchanged, so a stopped run resumes.
`--retime` retrains the default victim into a scratch folder, so that the cost bar compares the
defense with a training run timed on the same machine in the same run.

Writes reports/benchmarks/trigger_agnostic.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import torch

from baeraser_lib.artifacts import config_hash
from baeraser_lib.params import attack_config, train_config
from baeraser_lib.data import load_experiment_data
from baeraser_lib.defenses.baeraser import BaeraserConfig, baeraser
from baeraser_lib.lab.claims import COST_SHARE, KEPT_POINTS, LOW_ASR
from baeraser_lib.lab.grid import load_grid
from baeraser_lib.metrics import clean_accuracy, evaluate
from baeraser_lib.lab.reports import REPO, write_json_atomic
from baeraser_lib.lab.site import trigger_agnostic_met
from baeraser_lib.train import pick_device
from baeraser_lib.victims import obtain_model

OUT = REPO / "reports" / "benchmarks" / "trigger_agnostic.json"
DEFAULT_VICTIM = "badnets_3x3_corner"  # the main job's default victim (BadNets 3×3, bottom-right corner)
BARS = {"asr_after": LOW_ASR, "acc_drop_points": float(KEPT_POINTS), "clean_acc_drop_points": 0.5,
        "default_asr_after": 0.01, "default_acc_drop_points": 1.5, "cost_ratio": COST_SHARE}


def load_victims(grid_path: str, clean_seeds: list[int]) -> list[tuple]:
    """(name, TrainConfig, AttackConfig or None, parameters): the grid's runs, then the clean seeds."""
    runs = load_grid(grid_path).runs()
    victims = [(r.axes["variant"], train_config(r.parameters), attack_config(r.parameters), r.parameters)
               for r in runs]
    base = runs[0].parameters
    return victims + [(f"clean_seed{s}", dataclasses.replace(train_config(base), seed=s), None, base)
                      for s in clean_seeds]


def row_for(name: str, victim, data, cfg: BaeraserConfig, device, defense_config) -> dict:
    # what the defender runs: nothing in `defend` sees the trigger, the target or the test split
    d = baeraser(victim.model, data.holding, data.info.num_classes, cfg, device=device, progress=False)
    res, repaired, history = d.recovery, d.model, d.history
    attack = victim.meta.get("attack_config")
    row = {"victim": name, "artifact": victim.path.name, "attack": attack["name"] if attack else None,
           "options": ({k: attack[k] for k in ("trigger_size", "trigger_position", "poison_rate", "target_label",
                                               "options")} if attack else None),
           "backdoored_truth": attack is not None, "true_target": victim.target_label,
           "backdoored": d.backdoored, "flagged": d.flagged, "pool_labels": res.kept,
           "growth": {str(k): v for k, v in d.growth.items()},
           "mask_sizes": [r.get("mask_size") for r in res.per_label],
           "anomaly_index": [r["anomaly_index"] for r in res.per_label],
           "unlearn_epochs": max((h["epoch"] for h in history), default=0),
           "chosen_epoch": next((h["epoch"] for h in history if h.get("chosen")), 0)}
    if victim.trigger is not None:
        before = evaluate(victim.model, data.evaluation, victim.trigger, victim.rule, device=device)
        after = evaluate(repaired, data.evaluation, victim.trigger, victim.rule, device=device)
        row.update(asr_before=before["asr"], asr_after=after["asr"], acc_before=before["clean_acc"],
                   acc_after=after["clean_acc"], robust_acc_after=after["robust_acc"])
    else:
        row.update(asr_before=None, asr_after=None, acc_before=clean_accuracy(victim.model, data.evaluation, device),
                   acc_after=clean_accuracy(repaired, data.evaluation, device))
    row.update(acc_drop_points=100 * (row["acc_before"] - row["acc_after"]),
               seconds=d.seconds, defense_seconds=d.seconds["total"],
               victim_train_seconds=victim.train_seconds, defense_config=defense_config)
    row["target_flagged"] = victim.target_label in d.flagged if victim.target_label is not None else None
    return row


def bars(rows: list[dict], retimed: float | None) -> dict:
    """Each figure the issue asks for, beside its bar (computed from the rows, never typed)."""
    out = {"backdoored": [], "clean": [], "default": None, "all_to_all": []}
    for r in rows:
        if not r["backdoored_truth"]:
            out["clean"].append({"victim": r["victim"], "backdoored": r["backdoored"],
                                 "acc_drop_points": r["acc_drop_points"], "met": trigger_agnostic_met(r, BARS)})
        elif r["true_target"] is None:
            out["all_to_all"].append({"victim": r["victim"], "flagged": r["flagged"], "asr_before": r["asr_before"],
                                      "asr_after": r["asr_after"], "acc_drop_points": r["acc_drop_points"]})
        else:
            out["backdoored"].append({"victim": r["victim"], "target_flagged": r["target_flagged"],
                                      "asr_after": r["asr_after"], "acc_drop_points": r["acc_drop_points"],
                                      "met": trigger_agnostic_met(r, BARS)})
        if r["victim"] == DEFAULT_VICTIM:
            train_s = retimed or r["victim_train_seconds"]
            out["default"] = {"asr_after": r["asr_after"], "acc_drop_points": r["acc_drop_points"],
                              "defense_seconds": r["defense_seconds"], "victim_train_seconds": train_s,
                              "victim_train_seconds_timed_in_this_run": retimed is not None,
                              "cost_ratio": r["defense_seconds"] / train_s,
                              "met_asr_acc": r["asr_after"] <= BARS["default_asr_after"]
                              and r["acc_drop_points"] <= BARS["default_acc_drop_points"],
                              "met_cost": r["defense_seconds"] / train_s <= BARS["cost_ratio"]}
    out["backdoored_met"] = sum(b["met"] for b in out["backdoored"])
    out["clean_met"] = sum(c["met"] for c in out["clean"])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", default=str(REPO / "grids" / "families.yaml"))
    ap.add_argument("--data", default=str(REPO / "data"))
    ap.add_argument("--artifacts", default=str(REPO / "artifacts"))
    ap.add_argument("--clean-seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--only", nargs="*", default=None, help="victim names to run (default: all)")
    ap.add_argument("--retime", action="store_true", help="retrain the default victim to time it in this run")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)

    cfg = BaeraserConfig()
    defense_config = dataclasses.asdict(cfg)
    config_id = config_hash(defense_config)
    device = pick_device(args.device)
    victims = load_victims(args.grid, args.clean_seeds)
    base = victims[0][3]
    grid_order = [v[0] for v in victims]  # the rows' order in the JSON, whatever `--only` runs first
    if args.only:
        unknown = set(args.only) - {v[0] for v in victims}
        if unknown:
            raise SystemExit(f"unknown victim(s) {sorted(unknown)}; the grid has {[v[0] for v in victims]}")
        victims = sorted((v for v in victims if v[0] in args.only), key=lambda v: args.only.index(v[0]))
    out_path = Path(args.out)
    old = json.loads(out_path.read_text()) if out_path.exists() else {}
    done = {r["victim"]: r for r in old.get("rows", []) if old.get("defense_config_id") == config_id}
    data = load_experiment_data(base["dataset"], args.data, holding_ratio=base["holding_ratio"], seed=base["seed"],
                                train_subset=base.get("train_subset"), download=bool(base.get("download")))
    retimed = old.get("retimed_default_train_seconds") if old.get("defense_config_id") == config_id else None
    if args.retime and retimed is None:
        name, train, attack, _ = next(v for v in victims if v[0] == DEFAULT_VICTIM)
        with tempfile.TemporaryDirectory() as scratch:
            retimed = obtain_model(train, attack, data, scratch, device, progress=False,
                                   track_epochs=False).train_seconds
        print(f"default victim retrained in {retimed:.0f} s", flush=True)
    rows = dict(done)

    def write(rows: dict) -> None:
        order = grid_order + [k for k in rows if k not in grid_order]
        ordered = [rows[k] for k in order if k in rows]
        write_json_atomic(out_path, {"defense_config_id": config_id, "defense_config": defense_config,
                                     "bars": BARS, "retimed_default_train_seconds": retimed,
                                     "rows": ordered, "summary": bars(ordered, retimed),
                                     "device": str(device), "torch_threads": torch.get_num_threads()})

    for name, train, attack, _ in victims:
        victim = obtain_model(train, attack, data, args.artifacts, device, progress=False, track_epochs=False)
        if name in done and done[name]["artifact"] == victim.path.name:
            print(f"[reuse] {name}", flush=True)
            continue
        rows[name] = row_for(name, victim, data, cfg, device, defense_config)
        r = rows[name]
        print(f"{name}: flagged {r['flagged']} (target {r['true_target']}), ASR {r['asr_before']} → {r['asr_after']}, "
              f"acc {r['acc_before']:.4f} → {r['acc_after']:.4f}, {r['defense_seconds']:.0f} s", flush=True)
        write(rows)
    write(rows)  # once more: the rows in the grid's order, also when every row was reused
    print(out_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
