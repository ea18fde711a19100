"""Probes of bad input, as a new user or an attacker would send it: how many end in a clear error
before any compute, how many in a traceback from deep inside a library we use, how many in a
silent wrong result.

    .venv/bin/python benchmarks/probes.py

The probes are the reliability tests themselves (one source): each parametrised case of the
classes below is one probe. A passing case is a clear error (or, for the few probes of a
behaviour, the right behaviour); a failing one is classified from its failure: "DID NOT RAISE"
is a silent wrong result, an exception of ours with another message an unclear error, and any
other exception a deep traceback. The target (reliability issue): 0 deep tracebacks, 0 silent
wrong results.

Writes reports/benchmarks/probes.json: the counts, per class and in all, and every probe with
its outcome.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from baeraser_lib.lab.reports import REPO, write_json_atomic

CLASSES = {  # probe class → the pytest selection that holds its probes
    "paths: names that would leave their folder": ["tests/test_paths.py"],
    "numbers: NaN, inf, text, bools, out of range in every config": ["tests/test_validation.py", "-k",
                                                                       "rejects_nonsense or message or containers"],
    "parameters checked before any kernel (grid, report runner)": ["tests/test_validation.py", "-k",
                                                                    "dry_run or report_runner"],
    "data: dtype, range, shape, labels, malformed files": ["tests/test_validation.py", "-k",
                                                           "door or idx or cifar or fit_the_model"],
    "artifacts: edited or forged sidecars, replaced weights, non-finite models": ["tests/test_sidecars.py"],
    "dask: peers that are not a Dask scheduler": ["tests/test_sweep.py", "-k", "not_dask or unreachable"],
    "reports: other parameters and failures never overwrite the defaults": [
        "tests/test_notebooks.py", "-k", "never_touches or keeps_the_last_good"],
}
OURS = ("ConfigError", "DataError", "CheckpointError", "DataNotFoundError", "FloatingPointError", "SystemExit")


def classify(text: str) -> str:
    """The outcome of a failed probe, from its failure text."""
    if "DID NOT RAISE" in text:
        return "silent wrong result"
    if "Regex pattern did not match" in text:
        return "unclear error"
    if any(f"{e}:" in text or f".{e}" in text for e in OURS) and "AssertionError" in text:
        return "silent wrong result"  # ours raised, but a check of the result failed
    return "deep traceback"


class Collect:
    def __init__(self, name: str):
        self.name, self.rows = name, []

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or (report.when == "setup" and not report.passed):
            if report.skipped:
                outcome = "skipped"
            else:
                outcome = "clear error or right behaviour" if report.passed else classify(report.longreprtext)
            self.rows.append({"class": self.name, "probe": report.nodeid, "outcome": outcome})


def main() -> int:
    rows, start = [], time.perf_counter()
    for name, selection in CLASSES.items():
        c = Collect(name)
        pytest.main([str(REPO / selection[0]), *selection[1:], "-q", "-p", "no:cacheprovider", "--no-header", "-rN"], plugins=[c])
        rows += c.rows
        print(f"{name}: {len(c.rows)} probes, {dict(Counter(r['outcome'] for r in c.rows))}", flush=True)
    counts = Counter(r["outcome"] for r in rows)
    figures = {
        "probes": len(rows),
        "clear_errors": counts["clear error or right behaviour"],
        "deep_tracebacks": counts["deep traceback"],
        "silent_wrong_results": counts["silent wrong result"],
        "unclear_errors": counts["unclear error"],
        "skipped": counts["skipped"],
        "target": "0 deep tracebacks, 0 silent wrong results",
        "per_class": {name: dict(Counter(r["outcome"] for r in rows if r["class"] == name)) for name in CLASSES},
        "seconds": round(time.perf_counter() - start, 1),
        "every_probe": rows,
    }
    out = REPO / "reports" / "benchmarks" / "probes.json"
    write_json_atomic(out, figures)
    print(f"{len(rows)} probes: {figures['clear_errors']} clear, {figures['deep_tracebacks']} deep tracebacks, "
          f"{figures['silent_wrong_results']} silent wrong results, {figures['unclear_errors']} unclear → {out}")
    return 0 if figures["deep_tracebacks"] == figures["silent_wrong_results"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
