"""Mask sizes measured against a reference model trained on D_h alone: a fourth test for natural shortcuts.

    .venv/bin/python benchmarks/reference_masks.py      # after benchmarks/trigger_agnostic.py

Neural Cleanse's rule flags labels whose smallest working mask is an outlier. On Fashion-MNIST
"bag" (8) and "shirt" (6) need small masks on clean models too, so they are flagged beside true
targets (`reports/benchmarks/trigger_agnostic.json`). The idea tested here: a natural shortcut is
a property of the data, so a model the defender trains on D_h alone should need a small mask for
that label as well; dividing each label's mask size by the reference's (a difference of logs)
should cancel the shortcut and keep the backdoor, which the reference never learned.

Two references, each trained once on the whole D_h (it depends on D_h only, so every suspect
shares it): a small CNN (10 epochs) and the victims' own architecture, ResNet-18 at width 16
(6 epochs). Each gets the mask search with the defense's `RecoveryConfig` on the same split of D_h.
The suspects' sizes are the ones `trigger_agnostic.json` stored (the same `RecoveryConfig`, checked),
so no victim is trained or searched again. Per suspect and reference: the anomaly index of
log(size) − log(reference size), and the labels it flags at Neural Cleanse's cut (2.0).

The true target is read only to score the rows. Nothing here is adopted: the defense keeps the
plain index (see the README's trigger-agnostic section). Writes
reports/benchmarks/natural_shortcuts_reference_masks.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time

import torch
from torch.utils.data import TensorDataset

from baeraser_lib.config import TrainConfig
from baeraser_lib.data import as_tensors, load_experiment_data
from baeraser_lib.defenses.detection import DEFAULT_THRESHOLD, anomaly_index, flag_labels, size_anomaly_index
from baeraser_lib.defenses.recovery import RecoveryConfig, reverse_masks
from baeraser_lib.lab.reports import REPO, write_json_atomic
from baeraser_lib.train import fit, pick_device
from baeraser_lib.victims import new_model

SOURCE = REPO / "reports" / "benchmarks" / "trigger_agnostic.json"
OUT = REPO / "reports" / "benchmarks" / "natural_shortcuts_reference_masks.json"
HOLDING = {"dataset": "fashion_mnist", "holding_ratio": 0.05, "seed": 0}  # the families grid's D_h
REFERENCES = {
    "small_cnn": TrainConfig(dataset="fashion_mnist", model="small_cnn", width=16, epochs=10, seed=123),
    "resnet18_w16": dataclasses.replace(TrainConfig(), epochs=6, seed=123),
}
SHORTCUTS = (6, 8)  # "shirt" and "bag": small masks on clean models too


def relative_index(sizes: list[float], reference: list[float]) -> list[float]:
    """The anomaly index of log(size) − log(reference size) (both floored at 0.1 pixel, as in
    `size_anomaly_index`): a label is suspicious when it needs a far smaller mask than the
    reference model does, relative to the other labels."""
    if len(sizes) != len(reference):
        raise ValueError(f"{len(sizes)} sizes against {len(reference)} reference sizes")
    return anomaly_index([math.log(max(s, 0.1)) - math.log(max(r, 0.1)) for s, r in zip(sizes, reference)])


def reference_sizes(cfg: TrainConfig, holding, num_classes: int, recovery: RecoveryConfig, device) -> dict:
    """Train one reference on the whole of D_h, then its mask search: sizes and seconds."""
    x, y = as_tensors(holding)
    torch.manual_seed(0)
    t = time.perf_counter()
    model = new_model(cfg)
    fit(model, TensorDataset(x, y), cfg, device=device, progress=False)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    rows = reverse_masks(model.eval(), holding, num_classes, None, recovery, device)
    return {"config": repr(cfg), "train_seconds": train_s, "mask_seconds": time.perf_counter() - t,
            "sizes": [d["mask_size"] for d in rows]}


def score(row: dict, refs: dict[str, dict]) -> dict:
    """One suspect: the plain verdict and each reference's, beside the truth."""
    sizes, target = row["mask_sizes"], row["true_target"]
    out = {"true_target": target, "attack": row["attack"], "sizes": sizes}
    variants = {"plain": size_anomaly_index(sizes),
                **{name: relative_index(sizes, ref["sizes"]) for name, ref in refs.items()}}
    for name, index in variants.items():
        flagged = flag_labels(index, DEFAULT_THRESHOLD)
        out[name] = {"index": index, "flagged": flagged,
                     "target_flagged": None if target is None else target in flagged,
                     "shortcuts_flagged": [k for k in flagged if k in SHORTCUTS and k != target]}
    return out


def summary(rows: dict, names: list[str]) -> dict:
    """Per variant: single-target victims whose target was flagged, clean models judged clean, and
    models (clean or not) on which "bag" or "shirt" was flagged though it was not the target."""
    targeted = [r for r in rows.values() if r["true_target"] is not None]
    clean = [r for r in rows.values() if r["attack"] is None]
    return {n: {"targets_flagged": sum(r[n]["target_flagged"] for r in targeted), "single_target_victims": len(targeted),
                "clean_judged_clean": sum(not r[n]["flagged"] for r in clean), "clean_models": len(clean),
                "models_with_a_shortcut_flagged": sum(bool(r[n]["shortcuts_flagged"]) for r in rows.values()),
                "models": len(rows)} for n in names}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(REPO / "data"))
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    source = json.loads(SOURCE.read_text())
    recovery = RecoveryConfig()
    stored = {k: tuple(v) if isinstance(v, list) else v for k, v in source["defense_config"]["recovery"].items()}
    if stored != dataclasses.asdict(recovery):
        raise SystemExit(f"{SOURCE.name} was measured with another RecoveryConfig; run trigger_agnostic.py again")
    device = pick_device(args.device)
    data = load_experiment_data(HOLDING["dataset"], args.data, holding_ratio=HOLDING["holding_ratio"],
                                seed=HOLDING["seed"])
    k = data.info.num_classes
    refs = {}
    for name, cfg in REFERENCES.items():
        refs[name] = reference_sizes(cfg, data.holding, k, recovery, device)
        print(name, round(refs[name]["train_seconds"], 1), "s training,", round(refs[name]["mask_seconds"], 1),
              "s mask search:", [round(s, 1) for s in refs[name]["sizes"]], flush=True)
    rows = {r["victim"]: score(r, refs) for r in source["rows"]}
    names = ["plain", *REFERENCES]
    for victim, r in rows.items():
        print(victim.ljust(24), str(r["true_target"]).ljust(5), "  ".join(f"{n}: {r[n]['flagged']}" for n in names))
    doc = {"source": SOURCE.name, "recovery_config": repr(recovery), "threshold": DEFAULT_THRESHOLD,
           "device": str(device), "torch_threads": torch.get_num_threads(), "references": refs, "rows": rows,
           "summary": summary(rows, names)}
    write_json_atomic(OUT, doc)
    print(json.dumps(doc["summary"], indent=1))
    print(OUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
