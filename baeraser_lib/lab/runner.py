"""Run the notebooks through papermill and export HTML with nbconvert.

    baeraser report run                      # all notebooks, default parameters
    baeraser report run --only 01_inject -p dataset mnist -p download true
    baeraser report run --attacks all        # 01 → 03 once per attack
    baeraser report index                    # rebuild reports/index.html
    baeraser report table                    # attack × defense table, Markdown

(`python -m baeraser_lib.lab.runner ...` is the same command.)
The `.py` (jupytext percent format) of each notebook is what runs, so a report always reflects
the source. Each notebook writes `<reports_dir>/<report_name>.json`, a flat object of its key
figures; the runner writes `<report_name>.html` (also for a failing run, showing the error),
`runs.json` (status of each run) and `index.html`, and exits non-zero if any notebook failed.
With `--attacks`, the notebooks run once per attack: the default attack's reports keep their
plain names, the others carry the attack (`01_inject-trojannn.json`); `batches.json` records the
wall time of the whole batch, and the index gains an attack × defense table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path

import yaml

from ..atomic import atomic_open
from .notebooks import NOTEBOOKS, NOTEBOOKS_DIR, RUNNER_PARAMS, parameters_of
from .reports import REPORTS_DIR, write_json_atomic
from .site import attack_markdown, inject_markdown, verdict_markdown, write_index

DEFAULT_ATTACK = "badnets"  # its reports keep the plain names


def _html(nb, path: Path) -> None:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    with atomic_open(path, encoding="utf-8") as f:
        f.write(body)


def run_notebook(name: str, params: dict, out_dir: Path, report_name: str | None = None,
                 notebooks_dir: Path = NOTEBOOKS_DIR, progress: bool = True,
                 executed_dir: Path | None = None) -> dict:
    """Execute one notebook with `params`; write its HTML; return its status row. The executed
    notebook goes to `executed_dir` (default: `out_dir/.executed`)."""
    import jupytext
    import nbformat
    import papermill as pm

    report_name = report_name or name
    out_dir.mkdir(parents=True, exist_ok=True)
    executed_dir = executed_dir or out_dir / ".executed"
    executed_dir.mkdir(exist_ok=True)
    executed_path = executed_dir / f"{report_name}.ipynb"
    for stale in (out_dir / f"{report_name}.json", out_dir / f"{report_name}.html", executed_path):
        stale.unlink(missing_ok=True)  # no stale figures, page or notebook after a failure
    nb = jupytext.read(notebooks_dir / f"{name}.py")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    full = {**params, "reports_dir": str(out_dir.resolve()), "report_name": report_name}
    start, status, error = time.perf_counter(), "ok", None
    try:
        pm.execute_notebook(nb, str(executed_path), parameters=full, cwd=str(notebooks_dir),
                            kernel_name="python3", progress_bar=progress)
    except pm.PapermillExecutionError as err:
        status, error = "failed", f"{err.ename}: {err.evalue}"
    except Exception as err:  # kernel died, timeout, ...
        status, error = "failed", f"{type(err).__name__}: {err}"
    seconds = time.perf_counter() - start
    if executed_path.exists():
        _html(nbformat.read(executed_path, as_version=4), out_dir / f"{report_name}.html")
    return {"notebook": name, "status": status, "error": error, "seconds": round(seconds, 1),
            "parameters": params, "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def _parse_params(pairs: list[list[str]]) -> dict:
    return {key: yaml.safe_load(value) for key, value in pairs or []}


def run(notebooks: list[str], params: dict, out_dir: Path = REPORTS_DIR, suffix: str = "",
        notebooks_dir: Path = NOTEBOOKS_DIR, progress: bool = True) -> list[dict]:
    """Run `notebooks` in order with `params` (each gets the ones it declares), then index."""
    from ..errors import ConfigError
    from ..safepath import check_name

    try:
        for n in notebooks:
            check_name(f"{n}{suffix}", "report name (notebook and --suffix)")
    except ConfigError as err:
        raise SystemExit(str(err)) from None
    unknown_nb = [n for n in notebooks if not (notebooks_dir / f"{n}.py").exists()]
    if unknown_nb:
        known = sorted(p.stem for p in notebooks_dir.glob("*.py"))
        raise SystemExit(f"unknown notebook(s) {unknown_nb}; available: {known}")
    declared = {n: parameters_of(notebooks_dir / f"{n}.py") for n in notebooks}
    unknown = sorted(set(params) - set().union(*declared.values()) | (set(params) & set(RUNNER_PARAMS)))
    if unknown:
        raise SystemExit(f"unknown parameter(s) {unknown}; the notebooks declare "
                         f"{sorted(set().union(*declared.values()) - set(RUNNER_PARAMS))}")
    from .grid import check_parameters

    every = {}
    for d in declared.values():
        every.update(d)
    try:  # the sweep's checks: a bad dataset or a NaN fails here, before any kernel starts
        check_parameters(params, every, notebooks)
    except ConfigError as err:
        raise SystemExit(f"bad parameters: {err}") from None
    # Progress bars do not render in static HTML (epoch lines still print), so the kernels get
    # TQDM_DISABLE=1. tqdm reads its environment when it is imported: importing it here first
    # keeps the runner's own per-cell bar (papermill's) on.
    import tqdm.auto  # noqa: F401

    os.environ.setdefault("TQDM_DISABLE", "1")
    runs_file = out_dir / "runs.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for name in notebooks:
        own = {k: v for k, v in params.items() if k in declared[name]}
        row = run_notebook(name, own, out_dir, f"{name}{suffix}", notebooks_dir, progress)
        results.append(row)
        runs = json.loads(runs_file.read_text()) if runs_file.exists() else {}
        runs[f"{name}{suffix}"] = row
        write_json_atomic(runs_file, runs)
        write_index(out_dir)
        print(f"[{row['status']}] {name}{suffix} in {row['seconds']} s" + (f": {row['error']}" if row["error"] else ""),
              flush=True)
    return results


def run_attacks(attacks: list[str], notebooks: list[str], params: dict, out_dir: Path = REPORTS_DIR,
                notebooks_dir: Path = NOTEBOOKS_DIR, progress: bool = True) -> list[dict]:
    """Run `notebooks` once per attack (names as in the module docstring); record the batch."""
    from ..attacks import ATTACKS

    attacks = list(ATTACKS) if attacks == ["all"] else attacks
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise SystemExit(f"unknown attack(s) {unknown}; choose from {sorted(ATTACKS)} or 'all'")
    if "attack" in params:
        raise SystemExit("give the attacks with --attacks, not with -p attack")
    start, results = time.perf_counter(), []
    for attack in attacks:
        suffix = "" if attack == DEFAULT_ATTACK else f"-{attack}"
        own = notebooks
        if "04_ablations" in notebooks:  # its ablations resize and move a patch with one target
            from .ablations import check_ablation_attack
            from ..params import attack_config
            from ..errors import ConfigError

            p = {**parameters_of(notebooks_dir / "04_ablations.py"), **params, "attack": attack}  # as 04 sees them
            try:
                check_ablation_attack(attack_config(p), p["dataset"])
            except ConfigError as err:
                own = [n for n in notebooks if n != "04_ablations"]
                print(f"[skip] 04_ablations{suffix}: {err}", flush=True)
        results += run(own, {**params, "attack": attack}, out_dir, suffix, notebooks_dir, progress)
    write_json_atomic(out_dir / "batches.json", {
        "attacks": attacks, "notebooks": notebooks, "parameters": params,
        "seconds": round(time.perf_counter() - start, 1),
        "status": "ok" if all(r["status"] == "ok" for r in results) else "failed",
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    write_index(out_dir)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="baeraser report", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute notebooks and write HTML + JSON reports")
    r.add_argument("--only", nargs="+", default=None, help=f"notebooks to run (default: {NOTEBOOKS})")
    r.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="a parameter for every notebook declaring it; VALUE is read as YAML (0.1, true, null, [1,2])")
    r.add_argument("--out", type=Path, default=REPORTS_DIR, help="reports folder (default: reports/)")
    r.add_argument("--suffix", default="", help="appended to report names, e.g. -trojannn")
    r.add_argument("--attacks", nargs="+", default=None, metavar="ATTACK",
                   help="run the notebooks once per attack ('all': every registered one)")
    r.add_argument("--no-progress", action="store_true", help="hide papermill's per-cell progress bar")
    i = sub.add_parser("index", help="rebuild index.html from the reports folder")
    i.add_argument("--out", type=Path, default=REPORTS_DIR)
    t = sub.add_parser("table", help="print the attack × defense table as Markdown")
    t.add_argument("--out", type=Path, default=REPORTS_DIR)
    j = sub.add_parser("injects", help="print every attack's notebook 01 figures as Markdown")
    j.add_argument("--out", type=Path, default=REPORTS_DIR)
    j.add_argument("--pattern", default="01_inject*.json", help="e.g. '*/01_inject.json' in a grid's folder")
    v = sub.add_parser("verdicts", help="print an ablation report's claims table as Markdown")
    v.add_argument("--out", type=Path, default=REPORTS_DIR)
    v.add_argument("--report", default="04_ablations")
    args = ap.parse_args(argv)
    if args.cmd == "verdicts":
        print(verdict_markdown(args.out, args.report))
        return 0
    if args.cmd == "index":
        print(write_index(args.out))
        return 0
    if args.cmd == "injects":
        print(inject_markdown(args.out, args.pattern))
        return 0
    if args.cmd == "table":
        print(attack_markdown(args.out))
        return 0
    if args.attacks:
        if args.suffix:
            raise SystemExit("--suffix and --attacks do not mix: each attack names its own reports")
        results = run_attacks(args.attacks, args.only or NOTEBOOKS, _parse_params(args.param), args.out,
                              progress=not args.no_progress)
    else:
        results = run(args.only or NOTEBOOKS, _parse_params(args.param), args.out, args.suffix,
                      progress=not args.no_progress)
    failed = [r["notebook"] for r in results if r["status"] != "ok"]
    print(f"reports in {args.out}: {len(results) - len(failed)} ok, {len(failed)} failed {failed or ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
