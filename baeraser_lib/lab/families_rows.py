"""The finished rows of a sweep's report folder (reports/families/ by default), for the benchmarks
that run something more on each row: each row's notebook 03 parameters, and the shared data."""

from __future__ import annotations

import json
from pathlib import Path

from ..data import load_experiment_data
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
