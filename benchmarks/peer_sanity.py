"""Sanity of the peers: does each one, as written here, repair the default BadNets 3×3 victim?

    .venv/bin/python benchmarks/peer_sanity.py              # after notebook 01 at its defaults
    .venv/bin/python benchmarks/peer_sanity.py --only nc    # some settings only (rows are merged)

The bar (peers issue): ASR ≤ 0.10 with at most 5 points of clean accuracy lost. A peer that does
nothing would be a bug in our code, not a finding. Each peer runs with its published settings
(the registry's defaults) and, where those are known to miss on this victim (the families grid's
badnets_3x3_corner row), with one other setting named in advance, each with its reason:

- nc, `scale="log"`: the MAD of the logarithms of the mask norms (norms compared by ratios, as
  BAERASER's own detector does), instead of the raw norms.
- ibau, the authors' repository (lr 1e-3, batch 100) instead of BackdoorBench's (lr 1e-4, batch 256).
- sau, 20 epochs instead of 5 (the paper runs 100; 5 is our CPU budget), and the paper's 100.
- anp, 2,000 iterations, the paper's count (300 is our CPU budget).

Added after those missed (so not named in advance; the README says so):
- anp, 300 iterations with the cut chosen on D_h's validation part (`select="validation"`:
  BackdoorBench's sweep of cuts, the largest within 5 points of validation accuracy).
- sau, the paper's number of Adam steps (≈ 1,000) in fewer passes: batch 32 for 13 epochs on
  D_h's 2,400 training images, where the paper takes 100 epochs of batch 256 on ≈ 2,500.

After SAU was brought closer to the authors' code (Adam with AMSGrad; 1 − p summed from the
other classes), the SAU rows measured before that change are kept in the JSON under their names
with " (before the fidelity fix)" and a `superseded` note (the 20-epoch, 100-epoch and step-count
settings were not run again). Named before the fixed code ran:
- sau, published, again with the fixed code;
- sau, `train_mode=True`: the authors' own switch (BatchNorm in train mode for the unlearning
  step), which their code documents as giving lower ASR than the default at some accuracy.
Added after that missed by 0.013 ASR (so not named in advance): the same switch at 10 epochs
(twice our CPU budget). It met the bar, and a 20-epoch run that had started beside it was stopped
to give the families grid's column the time (`benchmarks/peer_column.py`).

Writes reports/benchmarks/peer_sanity.json (merged by row name, so runs can be split).
"""

from __future__ import annotations

import argparse
import json
import time

from baeraser_lib import defend
from baeraser_lib.config import AttackConfig, TrainConfig
from baeraser_lib.data import load_experiment_data
from baeraser_lib.defenses import DEFENSES
from baeraser_lib.lab.peer_settings import BAR, SETTINGS
from baeraser_lib.lab.reports import REPO, write_json_atomic
from baeraser_lib.metrics import der, evaluate
from baeraser_lib.victims import find_model

OUT = REPO / "reports" / "benchmarks" / "peer_sanity.json"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(REPO / "data"))
    ap.add_argument("--artifacts", default=str(REPO / "artifacts"))
    ap.add_argument("--only", nargs="*", default=None, help="defense names or row names to run")
    args = ap.parse_args(argv)
    train, attack = TrainConfig(), AttackConfig()
    data = load_experiment_data(train.dataset, args.data)
    victim = find_model(args.artifacts, train, attack)
    rows = json.loads(OUT.read_text())["rows"] if OUT.exists() else {}

    def score(m):  # the evaluation side: only here the true trigger and the test split appear
        return evaluate(m, data.evaluation, victim.trigger, victim.rule)

    before = score(victim.model)
    for name, (method, cfg, why) in SETTINGS.items():
        if args.only is not None and method not in args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        out = defend(victim.model, data.holding, data.info.num_classes, method, cfg, progress=False)
        after = score(out.model)
        drop = 100 * (before["clean_acc"] - after["clean_acc"])
        rows[name] = {"defense": method, "label": DEFENSES[method].label, "setting": why, "config": repr(cfg),
                      "clean_acc": after["clean_acc"], "asr": after["asr"], "acc_drop_points": drop,
                      "der": der(before["clean_acc"], after["clean_acc"], before["asr"], after["asr"]),
                      "flagged": out.flagged, "seconds": out.seconds["total"],
                      "wall_seconds": time.perf_counter() - t0,
                      "bar_met": after["asr"] <= BAR["asr_after"] and drop <= BAR["acc_drop_points"]}
        print(name, json.dumps({k: v for k, v in rows[name].items() if k != "config"}), flush=True)
        write_json_atomic(OUT, {"victim": victim.path.name, "before": before, "bar": BAR,
                                "n_holding": len(data.holding), "n_evaluation": len(data.evaluation),
                                "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
