"""The finished rows of a sweep's report folder (reports/families/ by default), for the benchmarks
that run something more on each row: each row's notebook 03 parameters, and the shared data."""

from __future__ import annotations

import json
from pathlib import Path

from ..data import load_experiment_data
from ..defenses.pool import obtain_pool
from ..params import attack_config, recovery_config, train_config
from ..victims import obtain_model
from .reports import REPO
from .sweep import RUN_FILE

FAMILIES = REPO / "reports" / "families"


def finished_rows(only: list[str] | None = None, folder: Path = FAMILIES) -> dict[str, dict]:
    """{row label: its notebook 03 parameters} for every finished row (or those named in `only`;
    an unknown name is a SystemExit listing the rows, before any compute)."""
    rows = {}
    for run in sorted(Path(folder).glob(f"*/{RUN_FILE}")):
        r = json.loads(run.read_text())
        if r.get("status") == "ok":
            rows[r["run_id"]] = next(s["parameters"] for s in r["steps"] if s["notebook"] == "03_unlearn")
    if only is not None:
        unknown = sorted(set(only) - set(rows))
        if unknown:
            raise SystemExit(f"unknown rows {unknown}; the families grid has {sorted(rows)}")
        rows = {k: v for k, v in rows.items() if k in only}
    return rows


def rows_data(rows: dict[str, dict], data_root: str):
    """The experiment data every row shares (the first row's dataset, D_h ratio, seed and subset)."""
    first = next(iter(rows.values()))
    return load_experiment_data(first["dataset"], data_root, holding_ratio=first["holding_ratio"], seed=first["seed"],
                                train_subset=first.get("train_subset"))


def row_victim_and_pool(params: dict, data, artifacts: str):
    """A row's victim (notebook 01's: cached, else trained again) and its recovered pool (notebook
    02's: cached, else recovered again) on `data`'s D_h, on the CPU, as (victim, pool, meta, pool
    path, pool was cached)."""
    victim = obtain_model(train_config(params), attack_config(params), data, artifacts, device="cpu", progress=False)
    holding_key = {"dataset": params["dataset"], "holding_ratio": params["holding_ratio"], "seed": params["seed"],
                   "n": len(data.holding)}
    pool, meta, pool_path, cached = obtain_pool(victim.model, victim.path.name, data.holding, data.info.num_classes,
                                                recovery_config(params), artifacts, holding_key, progress=False)
    return victim, pool, meta, pool_path, cached
