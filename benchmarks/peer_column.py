"""A peer at one other setting across the families grid: its column, measured again (issue #16).

    .venv/bin/python benchmarks/peer_column.py "sau · BatchNorm in train mode"            # every row
    .venv/bin/python benchmarks/peer_column.py "sau · BatchNorm in train mode" --only sig # some rows (merged)

The families grid runs each peer at the setting that met the sanity bar on the default victim
(`benchmarks/peer_sanity.py`). When a peer's passing setting is found after the sweep ran (SAU's,
after its fidelity fix), re-running the whole grid would re-run every defense on every row. This
runs that one peer at that one setting (a row name of `baeraser_lib.lab.peer_settings.SETTINGS`,
the one source of the settings) on every finished row of `reports/families/`, with the row's
cached victim (trained again with the same configs and seeds where the cache lost it, which the
row records) and the row's D_h. Each result is scored as notebook 03 scores it: clean accuracy,
ASR and DER on the evaluation split with the true trigger, seconds, and the ASR after the
attacker's re-tuning (`baeraser_lib.reactivation`, notebook 03's defaults). Beside it, the row's
committed figures for BAERASER and for the peer's grid setting (notebook 03, not re-run here),
and whether the victim scores as the grid's did (`--regrid` re-reads those, running nothing).

The true trigger is read for scoring only, after the defense has run.

Writes reports/benchmarks/peer_column.json, keyed by setting then row (merged, so runs resume).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from baeraser_lib import defend
from baeraser_lib.lab.peer_settings import SETTINGS
from baeraser_lib.lab.families_rows import FAMILIES, finished_rows, rows_data
from baeraser_lib.lab.reports import REPO, write_json_atomic
from baeraser_lib.metrics import der, evaluate
from baeraser_lib.params import attack_config, reactivation_config, train_config
from baeraser_lib.reactivation import reactivation
from baeraser_lib.victims import model_path, obtain_model

OUT = REPO / "reports" / "benchmarks" / "peer_column.json"


def beside(name: str, method: str, before: dict) -> dict:
    """The row's committed notebook 03 figures for BAERASER, the peer and the undefended victim, and
    whether this run's victim scores as the grid's did (a victim trained again need not)."""
    nb03 = json.loads((FAMILIES / name / "03_unlearn.json").read_text())
    grid = nb03["methods"]
    return {"grid": {"baeraser": grid["baeraser"], method: grid.get(method), "none": grid["none"]},
            "same_victim_as_grid": all(abs(before[k] - grid["none"][k]) < 1e-6 for k in ("asr", "clean_acc")),
            "reference_reactivated_asr": nb03["reactivation"]["models"]["clean reference"]["asr_after"]}


def run_row(name: str, params: dict, method: str, cfg, data, artifacts: str) -> dict:
    cached = model_path(artifacts, train_config(params), attack_config(params)).exists()
    victim = obtain_model(train_config(params), attack_config(params), data, artifacts, device="cpu", progress=False)
    cfg = dataclasses.replace(cfg, seed=params["seed"])  # the row's seed (the grid's D_h split within the defense)
    out = defend(victim.model, data.holding, data.info.num_classes, method, cfg, device="cpu", progress=False)
    before = evaluate(victim.model, data.evaluation, victim.trigger, victim.rule)
    after = evaluate(out.model, data.evaluation, victim.trigger, victim.rule)  # scoring only: the defense has run
    re = reactivation(out.model, data.train, data.evaluation, victim.trigger, victim.rule,
                      reactivation_config(params), device="cpu", before=after)
    return {"victim": victim.path.name, "victim_was_cached": cached, "config": repr(cfg), "before": before,
            "clean_acc": after["clean_acc"], "asr": after["asr"],
            "acc_drop_points": 100 * (before["clean_acc"] - after["clean_acc"]),
            "der": der(before["clean_acc"], after["clean_acc"], before["asr"], after["asr"]),
            "seconds": out.seconds["total"], "reactivated_asr": re["asr_after"], **beside(name, method, before)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("setting", help=f"a named setting: {sorted(SETTINGS)}")
    ap.add_argument("--data", default=str(REPO / "data"))
    ap.add_argument("--artifacts", default=str(REPO / "artifacts"))
    ap.add_argument("--only", nargs="*", default=None, help="row names to run")
    ap.add_argument("--regrid", action="store_true", help="re-read the grid's figures beside each row, run nothing")
    args = ap.parse_args(argv)
    if args.setting not in SETTINGS:
        raise SystemExit(f"unknown setting {args.setting!r}; the named settings are {sorted(SETTINGS)}")
    method, cfg, why = SETTINGS[args.setting]
    if args.regrid:
        doc = json.loads(OUT.read_text())
        for name, row in doc["settings"][args.setting]["rows"].items():
            row.update(beside(name, method, row["before"]))
        write_json_atomic(OUT, doc)
        return 0
    todo = finished_rows(args.only)
    data = rows_data(todo, args.data)
    doc = json.loads(OUT.read_text()) if OUT.exists() else {"settings": {}}
    entry = doc["settings"].setdefault(args.setting, {"defense": method, "setting": why, "rows": {}})
    for name, params in todo.items():
        t0 = time.perf_counter()
        entry["rows"][name] = {**run_row(name, params, method, cfg, data, args.artifacts),
                               "wall_seconds": time.perf_counter() - t0}
        r = entry["rows"][name]
        print(name, json.dumps({k: round(r[k], 4) for k in ("asr", "acc_drop_points", "der", "reactivated_asr",
                                                             "seconds")}), flush=True)
        write_json_atomic(OUT, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
