"""Can a defender tell a backdoor's target from a natural shortcut? Two candidate tests, measured.

    .venv/bin/python benchmarks/natural_shortcuts.py class_harm clean_seed0 badnets_3x3_corner ...
    .venv/bin/python benchmarks/natural_shortcuts.py staircase_growth clean_seed0 ...

On Fashion-MNIST, "bag" (8) and "shirt" (6) need small masks on clean models too, so the MAD rule
flags them beside true targets (see `benchmarks/trigger_agnostic.py`). Two defender-side tests
that might separate them, each needing only D_h:

* `class_harm`: unlearn each pooled label's triggers alone (the default `UnlearnConfig`) and
  measure every class's accuracy on the defense-validation part of D_h, before and after. The
  idea: unlearning a natural shortcut should hurt its own class; unlearning a backdoor should not.
* `staircase_growth`: how far MSA's staircase grows each pooled label's mask beyond the mask
  search's (a backdoor fires for a whole distribution of patterns in a small mask, so its mask
  should grow less), and how uniformly the pooled trigger flips every source class. Recovery runs
  with `anomaly_threshold=1.0` so that more labels are pooled and measured.
* `reference_transfer`: train a small CNN on the defense-train part of D_h alone, then stamp each
  pooled label's trigger on the validation images of other classes: a natural shortcut is a
  property of the data and might fool the reference too; a backdoor is this model's own.

Victims come from the artifact cache as in `trigger_agnostic.py`. The true target is read only
to label the rows. Writes reports/benchmarks/natural_shortcuts_<test>.json, victim by victim
(a rerun skips the victims already there).
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import torch
from torch.utils.data import TensorDataset

from baeraser_lib.config import TrainConfig
from baeraser_lib.data import as_tensors, load_experiment_data
from baeraser_lib.defenses.common import split_defense
from baeraser_lib.defenses.pool import TriggerPool
from baeraser_lib.defenses.recovery import RecoveryConfig, recover_triggers
from baeraser_lib.defenses.unlearning import UnlearnConfig, unlearn
from baeraser_lib.metrics import evaluate
from baeraser_lib.lab.reports import REPO, write_json_atomic
from baeraser_lib.train import fit, pick_device, predict
from baeraser_lib.victims import new_model, obtain_model
from trigger_agnostic import load_victims  # benchmarks/ is on sys.path when run as a script


def per_class(model, x, y, k_classes, device) -> list[float]:
    p = predict(model, x, device=device)
    return [round((p[y == k] == k).float().mean().item(), 4) for k in range(k_classes)]


def class_harm(v, data, device, K) -> dict:
    ucfg = UnlearnConfig()
    _, _, xv, yv = split_defense(data.holding, ucfg.val_fraction, ucfg.seed)
    xe, ye = as_tensors(data.evaluation)
    t = time.perf_counter()
    res = recover_triggers(v.model, data.holding, K, RecoveryConfig(), device=device, progress=False)
    pool = TriggerPool.from_result(res)
    rec = {"target": v.target_label, "flagged": res.flagged, "kept": res.kept, "recovery_s": time.perf_counter() - t,
           "val_before": per_class(v.model, xv, yv, K, device), "eval_before": per_class(v.model, xe, ye, K, device),
           "n_val": [int((yv == k).sum()) for k in range(K)], "runs": {}}
    sets = [[k] for k in pool.labels] + ([list(pool.labels)] if len(pool.labels) > 1 else [])
    for s in sets:
        t = time.perf_counter()
        m, h = unlearn(v.model, data.holding, pool.subset(s), ucfg, device=device, progress=False)
        r = {"val_after": per_class(m, xv, yv, K, device), "eval_after": per_class(m, xe, ye, K, device),
             "s": time.perf_counter() - t, "chosen": next(x["epoch"] for x in h if x.get("chosen")),
             "epochs": max(x["epoch"] for x in h),
             "hist": [{k: x.get(k) for k in ("epoch", "val_acc", "val_recovered_asr")} for x in h]}
        if v.trigger is not None:
            e = evaluate(m, data.evaluation, v.trigger, v.rule, device=device)
            r["asr"], r["acc"] = e["asr"], e["clean_acc"]
        else:
            r["acc"] = (predict(m, xe, device=device) == ye).float().mean().item()
        r["own_class_val_drop"] = {str(k): rec["val_before"][k] - r["val_after"][k] for k in s}
        rec["runs"][",".join(map(str, s))] = r
        print(v.path.name, s, "ASR", r.get("asr"), "acc", round(r["acc"], 4), "own-class val drop",
              r["own_class_val_drop"], flush=True)
    return rec


def staircase_growth(v, data, device, K) -> dict:
    _, _, xv, yv = split_defense(data.holding, UnlearnConfig().val_fraction, UnlearnConfig().seed)
    model = v.model.eval()
    res = recover_triggers(model, data.holding, K, RecoveryConfig(anomaly_threshold=1.0), device=device,
                           progress=False)
    pool = TriggerPool.from_result(res)
    rec = {"target": v.target_label, "flagged_at_1": res.flagged, "kept": res.kept,
           "sizes": [r.get("mask_size") for r in res.per_label], "ai": [r["anomaly_index"] for r in res.per_label],
           "labels": {}}
    g = torch.Generator().manual_seed(0)
    for i, k in enumerate(pool.labels):
        with torch.no_grad():
            p = torch.softmax(model(pool.stamp(i, xv, g).to(device)), 1).cpu()
        pred = p.argmax(1)
        per = [round((pred[yv == c] == k).float().mean().item(), 3) for c in range(K)]
        others = [per[c] for c in range(K) if c != k]
        size = float(pool.masks[i].sum())
        rec["labels"][str(k)] = {"flip_per_class": per, "min_flip": min(others), "mean_flip": sum(others) / (K - 1),
                                 "mean_pk": p[yv != k, k].mean().item(), "staircase_mask_l1": size,
                                 "search_mask_size": rec["sizes"][k], "growth": size / max(rec["sizes"][k], 0.1)}
        print(v.path.name, k, "target" if k == v.target_label else "", rec["labels"][str(k)], flush=True)
    return rec


@functools.lru_cache(maxsize=1)
def reference_model(data, device) -> dict:
    """One small CNN trained on the defense-train part of D_h: it depends on D_h only, so every
    victim shares it."""
    xtr, ytr, xv, yv = split_defense(data.holding, UnlearnConfig().val_fraction, UnlearnConfig().seed)
    cfg = TrainConfig(dataset=data.info.name, model="small_cnn", width=16, epochs=10, seed=123)
    t = time.perf_counter()
    ref = new_model(cfg)
    fit(ref, TensorDataset(xtr, ytr), cfg, device=device, progress=False)
    return {"model": ref.eval(), "seconds": time.perf_counter() - t,
            "val_acc": (predict(ref, xv, device=device) == yv).float().mean().item()}


def reference_transfer(v, data, device, K) -> dict:
    _, _, xv, yv = split_defense(data.holding, UnlearnConfig().val_fraction, UnlearnConfig().seed)
    _ref = reference_model(data, device)
    ref = _ref["model"]
    res = recover_triggers(v.model, data.holding, K, RecoveryConfig(anomaly_threshold=1.0), device=device,
                           progress=False)
    pool = TriggerPool.from_result(res)
    rec = {"target": v.target_label, "flagged_at_1": res.flagged, "ai": [r["anomaly_index"] for r in res.per_label],
           "reference": {"val_acc": _ref["val_acc"], "train_seconds": _ref["seconds"]}, "labels": {}}
    g = torch.Generator().manual_seed(0)
    for i, k in enumerate(pool.labels):
        keep = yv != k
        xs = pool.stamp(i, xv[keep], g)
        rec["labels"][str(k)] = {"victim_flip": (predict(v.model, xs, device=device) == k).float().mean().item(),
                                 "reference_flip": (predict(ref, xs, device=device) == k).float().mean().item(),
                                 "reference_base": (predict(ref, xv[keep], device=device) == k).float().mean().item()}
        print(v.path.name, k, "target" if k == v.target_label else "", rec["labels"][str(k)], flush=True)
    return rec


TESTS = {"class_harm": class_harm, "staircase_growth": staircase_growth, "reference_transfer": reference_transfer}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("test", choices=list(TESTS))
    ap.add_argument("victims", nargs="+")
    ap.add_argument("--grid", default=str(REPO / "grids" / "families.yaml"))
    ap.add_argument("--data", default=str(REPO / "data"))
    ap.add_argument("--artifacts", default=str(REPO / "artifacts"))
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    listed = load_victims(args.grid, [0, 1, 2])  # the trigger-agnostic benchmark's victims, same names
    base = listed[0][3]
    victims = {name: (train, attack) for name, train, attack, _ in listed}
    unknown = set(args.victims) - set(victims)
    if unknown:
        raise SystemExit(f"unknown victim(s) {sorted(unknown)}; choose from {sorted(victims)}")
    device = pick_device(args.device)
    data = load_experiment_data(base["dataset"], args.data, holding_ratio=base["holding_ratio"], seed=base["seed"],
                                train_subset=base.get("train_subset"), download=bool(base.get("download")))
    out_path = REPO / "reports" / "benchmarks" / f"natural_shortcuts_{args.test}.json"
    out = json.loads(out_path.read_text()) if out_path.exists() else {}
    for name in args.victims:
        if name in out:
            continue
        train, attack = victims[name]
        v = obtain_model(train, attack, data, args.artifacts, device, progress=False, track_epochs=False)
        out[name] = TESTS[args.test](v, data, device, data.info.num_classes)
        write_json_atomic(out_path, out)
    print(out_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
