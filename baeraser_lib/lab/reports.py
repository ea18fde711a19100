"""A report's files: a notebook's key figures as `<reports_dir>/<report_name>.json`, written atomically.

Every notebook ends by calling `write_report`; the runner (`runner`) adds the HTML beside it and
the site (`site`) indexes them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..atomic import atomic_open
from ..safepath import check_name

REPO = Path(__file__).resolve().parents[2]
REPORTS_DIR = REPO / "reports"
NOTEBOOKS = ["01_inject", "02_recover_triggers", "03_unlearn", "04_ablations"]  # the main job, in order


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=float)
    return Path(path)


def write_report(reports_dir: str | os.PathLike, report_name: str, figures: dict) -> Path:
    """A notebook's key figures as `<reports_dir>/<report_name>.json` (written atomically)."""
    return write_json_atomic(Path(reports_dir) / f"{check_name(report_name, 'report name')}.json", figures)
