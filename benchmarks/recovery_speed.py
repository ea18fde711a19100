"""Recovery speed: the vectorised MSA against the per-label reference loop, and K = 100 at scale.

    .venv/bin/python benchmarks/recovery_speed.py            # after `make reports` (needs 01's victim)

1. On the default victim (notebook 01's artifact, found by its default parameters), recover all
   K = 10 labels twice in the same run: `batched` (one vectorised pass, hopeless labels pruned after
   screening) and `loop` (one label at a time, every label through every stage). Prints the time
   ratio and whether both kept the same labels.
2. In a fresh subprocess (so its peak memory is its own), K = 100 labels on 32×32×3 inputs with a
   random-weight ResNet-18 (width 16) and a holding set of 5% of CIFAR's 50,000: time and peak RSS.

Writes reports/benchmarks/recovery_speed.json. Figures, not assertions: the tests do not time anything.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from torch.utils.data import TensorDataset

from baeraser_lib.config import AttackConfig, TrainConfig
from baeraser_lib.data import load_experiment_data
from baeraser_lib.defenses.recovery import RecoveryConfig, recover_triggers
from baeraser_lib.models import build_model
from baeraser_lib.lab.reports import REPO, write_json_atomic
from baeraser_lib.victims import find_model


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def k100(images: int = 2500, width: int = 16, cfg: RecoveryConfig = RecoveryConfig(), device=None) -> dict:
    """Recovery for K = 100 labels on 32×32×3 inputs: a random-weight ResNet-18 and `images` random
    images (5% of CIFAR's 50,000 by default). Seconds and how many labels reached the staircase."""
    torch.manual_seed(0)
    model = build_model("resnet18", 100, 3, width).eval()
    holding = TensorDataset(torch.rand(images, 3, 32, 32), torch.randint(0, 100, (images,)))
    start = time.perf_counter()
    res = recover_triggers(model, holding, 100, cfg, device=device, progress=False)
    return {"seconds": time.perf_counter() - start,
            "labels_through_staircase": sum(r["recovered_asr"] is not None for r in res.per_label)}


def k100_child() -> None:
    out = k100()
    print(json.dumps({"k100_seconds": out["seconds"], "k100_peak_mib": peak_mib(),
                      "k100_labels_through_staircase": out["labels_through_staircase"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artifacts", default=str(REPO / "artifacts"))
    ap.add_argument("--data-root", default=str(REPO / "data"))
    ap.add_argument("--out", default=str(REPO / "reports" / "benchmarks" / "recovery_speed.json"))
    ap.add_argument("--skip-k100", action="store_true")
    ap.add_argument("--k100-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.k100_child:
        return k100_child()

    victim = find_model(args.artifacts, TrainConfig(), AttackConfig())
    data = load_experiment_data("fashion_mnist", args.data_root)
    cfg = RecoveryConfig()
    figures = {"victim": victim.path.name, "num_classes": 10, "torch_threads": torch.get_num_threads()}
    runs = {}
    for mode in ("batched", "loop"):
        start = time.perf_counter()
        runs[mode] = recover_triggers(victim.model, data.holding, 10, cfg, mode=mode, progress=False)
        print(f"{mode:>8}: {time.perf_counter() - start:7.1f} s, kept {runs[mode].kept}", flush=True)
    figures.update({
        "seconds_recovery": runs["batched"].seconds,
        "seconds_per_label_loop": runs["loop"].seconds,
        "speedup": runs["loop"].seconds / runs["batched"].seconds,
        "labels_kept_batched": runs["batched"].kept,
        "labels_kept_loop": runs["loop"].kept,
        "same_labels_kept": runs["batched"].kept == runs["loop"].kept,
    })
    if not args.skip_k100:
        child = subprocess.run([sys.executable, __file__, "--k100-child"], capture_output=True, text=True, check=True)
        figures.update(json.loads(child.stdout.strip().splitlines()[-1]))
    write_json_atomic(args.out, figures)
    for k, v in figures.items():
        print(f"{k:>32}: {v:.2f}" if isinstance(v, float) else f"{k:>32}: {v}")


if __name__ == "__main__":
    main()
